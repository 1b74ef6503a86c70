"""The word bank of the synthetic catalogue: per-genre adjectives, nouns and series stems; makers; numerals.

The lists of different genres are disjoint, so a title's words reveal its genre (a language model can learn
that) and titles built from different genres can never coincide. `_check_word_bank` asserts the
disjointness at import time.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple


class GenreWords(NamedTuple):
    """One genre's vocabulary: titles are built from these words only."""

    adjectives: tuple[str, ...]
    nouns: tuple[str, ...]
    stems: tuple[str, ...]  # one-word series names: "<stem> <kind>", e.g. "Starfall Chronicles"


GENRE_WORDS: dict[str, GenreWords] = {
    "space opera": GenreWords(
        ("Distant", "Silent", "Stellar", "Orbital", "Cosmic", "Lunar", "Solar", "Infinite", "Drifting",
         "Radiant"),
        ("Star", "Nebula", "Orbit", "Comet", "Voyager", "Horizon", "Void", "Galaxy", "Pulsar", "Station",
         "Eclipse", "Beacon", "Armada", "Asteroid"),
        ("Starfall", "Voidborn", "Nova", "Skyforge", "Farlight", "Quasar", "Helion", "Zenith")),
    "fantasy": GenreWords(
        ("Elder", "Enchanted", "Forgotten", "Golden", "Ancient", "Wild", "Hidden", "Royal", "Silver",
         "Thorned"),
        ("Dragon", "Crown", "Rune", "Throne", "Sword", "Kingdom", "Wizard", "Oak", "Tower", "Spell",
         "Griffin", "Realm", "Chalice", "Bard"),
        ("Emberwild", "Dragonmoor", "Rimehold", "Thornkeep", "Glimmervale", "Oakheart", "Runeguard",
         "Everspire")),
    "mystery": GenreWords(
        ("Quiet", "Crooked", "Missing", "Secret", "Final", "Locked", "Foggy", "Curious", "Pale", "Gilded"),
        ("Clue", "Alibi", "Witness", "Cipher", "Ledger", "Verdict", "Detective", "Motive", "Key", "Affair",
         "Letter", "Manor", "Suspect", "Riddle"),
        ("Blackwood", "Greymoor", "Ashcombe", "Whitlock", "Marlowe", "Pennywhistle", "Kingsbridge",
         "Holloway")),
    "horror": GenreWords(
        ("Haunted", "Cursed", "Rotten", "Screaming", "Grim", "Wicked", "Buried", "Bleeding", "Howling",
         "Sunken"),
        ("Grave", "Crypt", "Ghost", "Coffin", "Skull", "Witch", "Curse", "Raven", "Cellar", "Marrow",
         "Shadow", "Lantern", "Hunger", "Scarecrow"),
        ("Nightmire", "Gravewood", "Dreadmoor", "Hexley", "Bonechill", "Wraithfield", "Ghoulhaven",
         "Mourncliff")),
    "romance": GenreWords(
        ("Sweet", "Tender", "Blushing", "Lovely", "Endless", "Gentle", "Velvet", "Honeyed", "Summer",
         "Starlit"),
        ("Heart", "Rose", "Kiss", "Promise", "Valentine", "Bouquet", "Wedding", "Sunset", "Dance", "Garden",
         "Vow", "Sonnet", "Blossom", "Serenade"),
        ("Rosewood", "Lovelace", "Heartsease", "Sweetbriar", "Amberly", "Bellamy", "Juniper", "Primrose")),
    "western": GenreWords(
        ("Dusty", "Lonesome", "Rugged", "Untamed", "Copper", "Restless", "Desperate", "Burnt", "Rusty",
         "Thirsty"),
        ("Canyon", "Saddle", "Sheriff", "Outlaw", "Mesa", "Stallion", "Rider", "Gulch", "Ranch", "Bounty",
         "Frontier", "Spur", "Prairie", "Wagon"),
        ("Tumbleweed", "Deadwood", "Redmesa", "Coyote", "Silverado", "Tombstone", "Laredo", "Dustbowl")),
    "cyberpunk": GenreWords(
        ("Neon", "Chrome", "Digital", "Synthetic", "Electric", "Glitched", "Encrypted", "Wired", "Binary",
         "Overclocked"),
        ("Circuit", "Grid", "Protocol", "Signal", "Code", "Android", "Network", "Drone", "Pixel", "Matrix",
         "Virus", "Firewall", "Implant", "Server"),
        ("Neonrain", "Glitchcore", "Hexnet", "Chromeheart", "Datastorm", "Cyberdawn", "Wirebound",
         "Synthwave")),
    "comedy": GenreWords(
        ("Wacky", "Clumsy", "Silly", "Grumpy", "Cheeky", "Fuzzy", "Bumbling", "Sneaky", "Giggling", "Zany"),
        ("Pickle", "Pancake", "Goose", "Sock", "Noodle", "Llama", "Banana", "Muffin", "Penguin", "Burrito",
         "Toaster", "Walrus", "Kazoo", "Waffle"),
        ("Bumblebrook", "Picklewick", "Snickerdoodle", "Wobbleton", "Fiddlesticks", "Muddlecombe",
         "Gigglesworth", "Noodleham")),
}

# Second word of a series name. Never used in standalone titles, so a series title can't equal a standalone.
SERIES_KINDS = ("Chronicles", "Saga", "Legacy", "Files", "Tales", "Adventures", "Cycle", "Diaries")
# Makers are "<name> <kind>" (studios, publishers, labels); descriptive metadata, the process ignores them.
MAKER_NAMES = ("Ironleaf", "Bluefinch", "Red Comet", "Northwind", "Paper Lantern", "Copperpot", "Seven Hills",
               "Brightwater", "Old Harbour", "Tin Soldier", "Greenhouse", "Blackbird", "Lighthouse", "Kettle",
               "Hollowtree", "Quicksilver", "Marigold", "Stonebridge", "Foxglove", "Ravenhill", "Sundial",
               "Windmill", "Mapleleaf", "Bright Owl")
MAKER_KINDS = ("Studios", "Pictures", "Press", "Interactive", "Games", "Books")
ROMAN = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X")


def _check_word_bank() -> None:
    """Words of different genres, series kinds and glue words never overlap (uniqueness relies on it)."""
    owner: dict[str, str] = {word: "series kinds" for word in SERIES_KINDS}
    owner.update({"The": "glue", "of": "glue", "the": "glue"})
    for genre, words in GENRE_WORDS.items():
        for word in itertools.chain(*words):
            assert word not in owner, f"word {word!r} of {genre!r} is also used by {owner[word]!r}"
            owner[word] = genre


_check_word_bank()
