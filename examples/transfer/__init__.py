"""Moving money: withdraw from one account, deposit into another, refund when the deposit fails."""
