"""Common English given-name variants, grouped by the formal name they stand for.

A name may belong to several groups ("al" is Albert, Alan or Alfred): two first
names are nickname-equivalent when they share at least one group. The groups are
data the matcher reads: the hub's own ``NAME_GROUPS`` below, merged with the
maintained table of the ``nicknames`` package (about 1,150 formal names), where each
formal name with its nicknames is one group more.
"""

from __future__ import annotations

from functools import cache

from nicknames import NickNamer

from customers.normalize import normalize_name

# Whether the ``nicknames`` package's groups are merged with NAME_GROUPS (docs/benchmarks.md,
# issue 13: measured both ways on the labelled benchmark).
MERGE_PACKAGE_TABLE = True

NAME_GROUPS: dict[str, tuple[str, ...]] = {
    "abigail": ("abby", "abbie", "gail"),
    "albert": ("al", "bert", "bertie"),
    "alan": ("al", "allan", "allen"),
    "alexander": ("alex", "alec", "sandy", "xander", "lex"),
    "alexandra": ("alex", "alexa", "sandra", "sandy", "lexi"),
    "alfred": ("al", "alf", "alfie", "fred"),
    "andrew": ("andy", "drew"),
    "anthony": ("tony", "ant"),
    "barbara": ("barb", "barbie", "babs"),
    "benjamin": ("ben", "benny", "benji"),
    "catherine": ("cathy", "kate", "katie", "cat", "kathy", "katherine", "kathryn", "kat"),
    "charles": ("charlie", "chuck", "chas", "chaz"),
    "christina": ("chris", "tina", "christine", "kristina"),
    "christopher": ("chris", "kit", "topher"),
    "daniel": ("dan", "danny"),
    "david": ("dave", "davey", "davy"),
    "deborah": ("debbie", "deb", "debra"),
    "donald": ("don", "donnie"),
    "dorothy": ("dot", "dottie", "dolly"),
    "edward": ("ed", "eddie", "ted", "teddy", "ned"),
    "elizabeth": ("liz", "lizzie", "beth", "betty", "betsy", "eliza", "libby", "bess", "elisabeth", "lisa"),
    "eleanor": ("ellie", "nell", "nora", "elle"),
    "emily": ("em", "emmy", "millie"),
    "frances": ("fran", "frankie", "fanny"),
    "francis": ("frank", "fran", "frankie"),
    "frederick": ("fred", "freddie", "freddy", "fritz"),
    "gabriel": ("gabe",),
    "gabrielle": ("gabby", "gabi", "elle"),
    "gregory": ("greg",),
    "harold": ("harry", "hal"),
    "henry": ("harry", "hank", "hal"),
    "isabella": ("bella", "izzy", "isabel", "isabelle"),
    "jacob": ("jake", "jay"),
    "james": ("jim", "jimmy", "jamie", "jimbo"),
    "janet": ("jan", "jenny"),
    "jennifer": ("jen", "jenny", "jenn"),
    "jessica": ("jess", "jessie"),
    "john": ("jack", "johnny", "jon"),
    "jonathan": ("jon", "jonny", "nathan"),
    "joseph": ("joe", "joey", "jos"),
    "josephine": ("jo", "josie", "jo-jo"),
    "joshua": ("josh",),
    "judith": ("judy", "jude"),
    "katherine": ("kate", "katie", "kathy", "kat", "kay", "catherine", "kathryn"),
    "kenneth": ("ken", "kenny"),
    "lawrence": ("larry", "laurie", "laurence"),
    "leonard": ("leo", "len", "lenny"),
    "margaret": ("maggie", "meg", "peggy", "marge", "margie", "greta", "daisy", "madge"),
    "matthew": ("matt", "matty"),
    "michael": ("mike", "mikey", "mick", "mickey", "mitch"),
    "nathaniel": ("nate", "nat", "nathan"),
    "nicholas": ("nick", "nicky", "nico", "colin"),
    "olivia": ("liv", "livvy", "ollie"),
    "patricia": ("pat", "patty", "trish", "tricia", "patsy"),
    "patrick": ("pat", "paddy", "rick"),
    "peter": ("pete",),
    "philip": ("phil", "pip", "phillip"),
    "rebecca": ("becky", "becca", "bex"),
    "richard": ("rick", "ricky", "dick", "rich", "richie"),
    "robert": ("rob", "bob", "bobby", "robbie", "bert", "robin"),
    "ronald": ("ron", "ronnie"),
    "samantha": ("sam", "sammy"),
    "samuel": ("sam", "sammy"),
    "sarah": ("sara", "sally", "sadie"),
    "stephen": ("steve", "stevie", "steven", "stephan"),
    "susan": ("sue", "susie", "suzy", "suzanne"),
    "theodore": ("theo", "ted", "teddy"),
    "thomas": ("tom", "tommy", "thom"),
    "timothy": ("tim", "timmy"),
    "victoria": ("vicky", "vicki", "tori", "vic"),
    "vincent": ("vince", "vinny"),
    "walter": ("walt", "wally"),
    "william": ("will", "bill", "billy", "willy", "liam", "willie"),
    "zachary": ("zach", "zack", "zak"),
}


@cache
def _groups_by_name(merged: bool) -> dict[str, frozenset[str]]:
    index: dict[str, set[str]] = {}
    for formal, variants in NAME_GROUPS.items():
        for name in (formal, *variants):
            index.setdefault(name, set()).add(formal)
    if merged:
        table = NickNamer().nickname_lookup
        # A "nickname" that is a given name in its own right (Emily's "Emma", which has nicknames of
        # its own) would make two people's names one: twins Emily and Emma West. Those are left out.
        given = {normalize_name(formal) for formal in table} | set(NAME_GROUPS)
        for formal, variants in table.items():
            group = normalize_name(formal)
            nicknames = {normalize_name(v) for v in variants} - given
            for name in {group, *nicknames} - {""}:
                index.setdefault(name, set()).add(group)
    return {name: frozenset(groups) for name, groups in index.items()}


def name_groups(name: str) -> frozenset[str]:
    """The formal names ``name`` (normalised) may stand for; the name itself when it is in no group."""
    return _groups_by_name(MERGE_PACKAGE_TABLE).get(name, frozenset({name}))


def canonical_first_name(name: str) -> str:
    """One stable key per name for blocking: the alphabetically first formal name of NAME_GROUPS it stands for.

    The hub's own groups only: the merged table chains names into wide, overlapping groups
    ("bob" is also a nickname of "bert"), whose first formal name would part a nickname
    from its own formal name ("bob" -> "bert", "robert" -> "bill") and change stored keys.
    """
    return min(_groups_by_name(False).get(name, frozenset({name}))) if name else ""
