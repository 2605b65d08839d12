"""The built-in Pokédex: the 151 first-generation species.

Each entry: types, base catch rate (1..255, as in the mainline games) and base HP stat,
from which a wild Pokémon's max HP is derived when a start event omits it.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass

DEFAULT_LEVEL = 50


@dataclass(frozen=True, slots=True)
class Species:
    number: int
    name: str
    types: tuple[str, ...]
    catch_rate: int
    base_hp: int

    def max_hp(self, level: int) -> int:
        """Max HP at ``level`` by the mainline formula, with zero IVs and EVs."""
        return (2 * self.base_hp * level) // 100 + level + 10


# number name types catch_rate base_hp
_TABLE = """
1 Bulbasaur Grass/Poison 45 45
2 Ivysaur Grass/Poison 45 60
3 Venusaur Grass/Poison 45 80
4 Charmander Fire 45 39
5 Charmeleon Fire 45 58
6 Charizard Fire/Flying 45 78
7 Squirtle Water 45 44
8 Wartortle Water 45 59
9 Blastoise Water 45 79
10 Caterpie Bug 255 45
11 Metapod Bug 120 50
12 Butterfree Bug/Flying 45 60
13 Weedle Bug/Poison 255 40
14 Kakuna Bug/Poison 120 45
15 Beedrill Bug/Poison 45 65
16 Pidgey Normal/Flying 255 40
17 Pidgeotto Normal/Flying 120 63
18 Pidgeot Normal/Flying 45 83
19 Rattata Normal 255 30
20 Raticate Normal 127 55
21 Spearow Normal/Flying 255 40
22 Fearow Normal/Flying 90 65
23 Ekans Poison 255 35
24 Arbok Poison 90 60
25 Pikachu Electric 190 35
26 Raichu Electric 75 60
27 Sandshrew Ground 255 50
28 Sandslash Ground 90 75
29 Nidoran-F Poison 235 55
30 Nidorina Poison 120 70
31 Nidoqueen Poison/Ground 45 90
32 Nidoran-M Poison 235 46
33 Nidorino Poison 120 61
34 Nidoking Poison/Ground 45 81
35 Clefairy Fairy 150 70
36 Clefable Fairy 25 95
37 Vulpix Fire 190 38
38 Ninetales Fire 75 73
39 Jigglypuff Normal/Fairy 170 115
40 Wigglytuff Normal/Fairy 50 140
41 Zubat Poison/Flying 255 40
42 Golbat Poison/Flying 90 75
43 Oddish Grass/Poison 255 45
44 Gloom Grass/Poison 120 60
45 Vileplume Grass/Poison 45 75
46 Paras Bug/Grass 190 35
47 Parasect Bug/Grass 75 60
48 Venonat Bug/Poison 190 60
49 Venomoth Bug/Poison 75 70
50 Diglett Ground 255 10
51 Dugtrio Ground 50 35
52 Meowth Normal 255 40
53 Persian Normal 90 65
54 Psyduck Water 190 50
55 Golduck Water 75 80
56 Mankey Fighting 190 40
57 Primeape Fighting 75 65
58 Growlithe Fire 190 55
59 Arcanine Fire 75 90
60 Poliwag Water 255 40
61 Poliwhirl Water 120 65
62 Poliwrath Water/Fighting 45 90
63 Abra Psychic 200 25
64 Kadabra Psychic 100 40
65 Alakazam Psychic 50 55
66 Machop Fighting 180 70
67 Machoke Fighting 90 80
68 Machamp Fighting 45 90
69 Bellsprout Grass/Poison 255 50
70 Weepinbell Grass/Poison 120 65
71 Victreebel Grass/Poison 45 80
72 Tentacool Water/Poison 190 40
73 Tentacruel Water/Poison 60 80
74 Geodude Rock/Ground 255 40
75 Graveler Rock/Ground 120 55
76 Golem Rock/Ground 45 80
77 Ponyta Fire 190 50
78 Rapidash Fire 60 65
79 Slowpoke Water/Psychic 190 90
80 Slowbro Water/Psychic 75 95
81 Magnemite Electric/Steel 190 25
82 Magneton Electric/Steel 60 50
83 Farfetch'd Normal/Flying 45 52
84 Doduo Normal/Flying 190 35
85 Dodrio Normal/Flying 45 60
86 Seel Water 190 65
87 Dewgong Water/Ice 75 90
88 Grimer Poison 190 80
89 Muk Poison 75 105
90 Shellder Water 190 30
91 Cloyster Water/Ice 60 50
92 Gastly Ghost/Poison 190 30
93 Haunter Ghost/Poison 90 45
94 Gengar Ghost/Poison 45 60
95 Onix Rock/Ground 45 35
96 Drowzee Psychic 190 60
97 Hypno Psychic 75 85
98 Krabby Water 225 30
99 Kingler Water 60 55
100 Voltorb Electric 190 40
101 Electrode Electric 60 60
102 Exeggcute Grass/Psychic 90 60
103 Exeggutor Grass/Psychic 45 95
104 Cubone Ground 190 50
105 Marowak Ground 75 60
106 Hitmonlee Fighting 45 50
107 Hitmonchan Fighting 45 50
108 Lickitung Normal 45 90
109 Koffing Poison 190 40
110 Weezing Poison 60 65
111 Rhyhorn Ground/Rock 120 80
112 Rhydon Ground/Rock 60 105
113 Chansey Normal 30 250
114 Tangela Grass 45 65
115 Kangaskhan Normal 45 105
116 Horsea Water 225 30
117 Seadra Water 75 55
118 Goldeen Water 225 45
119 Seaking Water 60 80
120 Staryu Water 225 30
121 Starmie Water/Psychic 60 60
122 Mr.Mime Psychic/Fairy 45 40
123 Scyther Bug/Flying 45 70
124 Jynx Ice/Psychic 45 65
125 Electabuzz Electric 45 65
126 Magmar Fire 45 65
127 Pinsir Bug 45 65
128 Tauros Normal 45 75
129 Magikarp Water 255 20
130 Gyarados Water/Flying 45 95
131 Lapras Water/Ice 45 130
132 Ditto Normal 35 48
133 Eevee Normal 45 55
134 Vaporeon Water 45 130
135 Jolteon Electric 45 65
136 Flareon Fire 45 65
137 Porygon Normal 45 65
138 Omanyte Rock/Water 45 35
139 Omastar Rock/Water 45 70
140 Kabuto Rock/Water 45 30
141 Kabutops Rock/Water 45 60
142 Aerodactyl Rock/Flying 45 80
143 Snorlax Normal 25 160
144 Articuno Ice/Flying 3 90
145 Zapdos Electric/Flying 3 90
146 Moltres Fire/Flying 3 90
147 Dratini Dragon 45 41
148 Dragonair Dragon 45 61
149 Dragonite Dragon/Flying 45 91
150 Mewtwo Psychic 3 106
151 Mew Psychic 45 100
"""


def _load() -> dict[str, Species]:
    species: dict[str, Species] = {}
    for line in _TABLE.strip().splitlines():
        number, name, types, rate, hp = line.split()
        name = name.replace("Mr.Mime", "Mr. Mime")
        species[_fold(name)] = Species(int(number), name, tuple(types.split("/")), int(rate), int(hp))
    return species


@functools.lru_cache(maxsize=1024)  # a few hundred names come again and again; bounded whatever comes
def _fold(name: str) -> str:
    return "".join(ch for ch in name.casefold() if ch.isalnum())


SPECIES: dict[str, Species] = _load()
NAMES: tuple[str, ...] = tuple(s.name for s in sorted(SPECIES.values(), key=lambda s: s.number))


def lookup(name: str) -> Species | None:
    """The species called ``name`` (case, spaces and punctuation ignored), or None."""
    return SPECIES.get(_fold(name))


def closest(name: str) -> str | None:
    """The species ``name`` most likely misspells (``Mewtoo`` → ``Mewtwo``), if one is close enough."""
    folded = _fold(name[:40])  # a name longer than any species' is no misspelling of one
    if not folded or len(name) > 40:
        return None
    close = difflib.get_close_matches(folded, SPECIES, n=1, cutoff=0.7)
    return SPECIES[close[0]].name if close else None


def unknown(name: str, shown: str | None = None) -> str:
    """What to say of ``name``, no species: ``unknown Pokémon 'Mewtoo' (did you mean Mewtwo?)``.
    ``shown``: ``name`` as the message echoes it (cut short, say)."""
    close = closest(name)
    hint = f"did you mean {close}?" if close else "not among the 151 of the Pokédex"
    return f"unknown Pokémon {shown if shown is not None else name!r} ({hint})"
