"""A toy saga for the engine's own tests: two steps, one compensation, no Pokémon.

    toy.first   Asked       -> first  (do_first)   -> FirstDone   -> toy.second
    toy.second  FirstDone   -> second (do_second)  -> SecondDone  -> toy.outcomes
    toy.failures FirstFailed | SecondFailed -> first.compensations (undo_first) -> ToyFailed -> toy.outcomes

Each step marks the saga in its service's ``marks`` and counts it under the event's name in
``tallies``: a test reads there whether a record was applied, and how many times. The second
step refuses an event whose ``refuse`` is set (``SecondFailed``), so the failure path is on demand.
"""
