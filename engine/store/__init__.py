"""What the engine keeps in every service database: inbox, outbox, parked records,
positions, and the migrations that make them."""
