"""The offline NLI starter set: 720 English premise/hypothesis pairs written by this project.

tunelab fine-tunes small causal LMs for 3-way natural language inference. Users without network
access cannot download SNLI or MultiNLI, so this module writes a small stand-in from scratch (no
sentence comes from an existing corpus). It is meant for smoke runs, tutorials and quick
before/after comparisons, not for benchmark numbers.

How it is built:
- Eight phenomena each own a table of hand-written scenes (an activity and its implications, a
  taxonomy chain, a pair of antonyms, ...). A builder turns one scene plus randomly drawn fillers
  (who, how many, which color) into a premise and exactly one entailed, one neutral and one
  contradicted hypothesis, all tagged with the phenomenon.
- Labels follow SNLI's annotation convention: premise and hypothesis describe the same scene at
  the same moment, so "a dog is sleeping" vs "a cat is sleeping" is a contradiction.
- Scenes, not only premises, are split: every scene is used by exactly one of train, validation
  and test, so a test premise is never a reworded training premise. Every split holds the same
  number of premises per phenomenon, hence exactly balanced labels.
- Everything is drawn from one `random.Random(seed)`: the same seed gives byte-identical files.
- `generate_starter_mnli` presents the same rows in MultiNLI's shape (dataset `starter_mnli`):
  phenomena as genres, two of them held out of training as the "mismatched" evaluation split.

Label ids follow SNLI/MultiNLI on the Hugging Face Hub: 0 entailment, 1 neutral, 2 contradiction.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from tunelab.rundir import write_jsonl

SPLITS = ("train", "validation", "test")
PREMISES_PER_PHENOMENON = {"train": 20, "validation": 5, "test": 5}

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight")


class Triple(NamedTuple):
    """A premise and one hypothesis per label, in label-id order."""

    premise: str
    entailment: str
    neutral: str
    contradiction: str


def with_article(noun_phrase: str) -> str:
    first_word = noun_phrase.split()[0].lower()
    vowel_sound = first_word[0] in "aeiou" and not first_word.startswith(("uni", "use", "one", "eu"))
    return f"{'an' if vowel_sound else 'a'} {noun_phrase}"


def as_sentence(text: str) -> str:
    return text[0].upper() + text[1:] + "."


def head_noun(noun_phrase: str) -> str:
    return noun_phrase.split()[-1]


def fill_templates(templates: Any, **slots: str) -> Triple:
    """A Triple from anything with premise/entailment/neutral/contradiction format strings."""
    return Triple(*(as_sentence(getattr(templates, field).format(**slots)) for field in Triple._fields))


# ---------------------------------------------------------------------------- people

GROWN_UPS = ("woman", "man", "young woman", "young man", "old woman", "old man")
PROFESSIONALS = (
    "nurse", "chef", "student", "tourist", "firefighter", "farmer", "police officer", "mail carrier",
    "construction worker", "waiter", "mechanic", "teacher", "photographer", "lifeguard", "gardener",
    "baker", "doctor", "painter",
)
CHILDREN = ("girl", "boy", "little girl", "little boy")
ADULTS = GROWN_UPS + ("teenager",) + PROFESSIONALS
EVERYONE = ADULTS + CHILDREN
NON_EXPERTS = GROWN_UPS + ("teenager", "girl", "boy")


# ---------------------------------------------------------------------------- hypernym

class TaxonomyChain(NamedTuple):
    """`specific` is a kind of `middle`, which is a kind of `general`; `sibling` excludes `middle`.

    The premise names `middle`. Going up to `general` is entailed, going down to `specific` (the
    reverse of "a dog is an animal") is neutral, and a sibling in the same scene contradicts.
    """

    specific: str
    middle: str
    general: str
    sibling: str
    frames: tuple[str, ...]


PET_FRAMES = (
    "{x} is sleeping on the porch of a wooden house",
    "{x} is lying on a rug in front of the fireplace",
    "{x} is drinking water from a bowl in the kitchen",
    "{x} is hiding under a bed in a messy bedroom",
    "a little boy is petting {x} in the backyard",
)
FARM_FRAMES = (
    "{x} is grazing in a muddy field",
    "{x} is standing in the shade of an old barn",
    "a farmer is leading {x} along a dirt road",
    "{x} is drinking from a trough next to the fence",
    "a girl is feeding {x} over a wooden fence",
)
BIRD_FRAMES = (
    "{x} is standing at the edge of a pond",
    "{x} is sitting on a fence post in the rain",
    "a child is feeding {x} in the park",
    "{x} is walking across an empty parking lot",
)
ADULT_FRAMES = (
    "{x} is reading a newspaper on a park bench",
    "{x} is waiting in line at the post office",
    "{x} is watering tomato plants in a small garden",
    "{x} is carrying groceries up the front steps",
    "{x} in a yellow raincoat is crossing a bridge",
    "{x} is knitting a scarf by the window",
)
CHILD_FRAMES = (
    "{x} is flying a kite on a windy hill",
    "{x} is drawing with chalk on the sidewalk",
    "{x} is splashing in a puddle after the rain",
    "{x} is climbing a tree in the backyard",
    "{x} is eating an ice cream cone on the steps",
)
VEHICLE_FRAMES = (
    "{x} is parked in front of a small bakery",
    "{x} is stuck in heavy traffic on a bridge",
    "{x} is driving slowly through the snow",
    "{x} is waiting at a red light downtown",
    "{x} is being washed at a gas station",
)
INSTRUMENT_FRAMES = (
    "{someone} is playing {x} on a busy street corner",
    "{someone} is playing {x} on a small stage",
    "{someone} is tuning {x} before a concert",
    "{someone} is practicing {x} in a quiet apartment",
)

TAXONOMY_CHAINS = (
    TaxonomyChain("puppy", "dog", "animal", "cat", PET_FRAMES),
    TaxonomyChain("kitten", "cat", "animal", "dog", PET_FRAMES),
    TaxonomyChain("foal", "horse", "animal", "cow", FARM_FRAMES),
    TaxonomyChain("calf", "cow", "animal", "horse", FARM_FRAMES),
    TaxonomyChain("lamb", "sheep", "animal", "goat", FARM_FRAMES),
    TaxonomyChain("billy goat", "goat", "animal", "sheep", FARM_FRAMES),
    TaxonomyChain("piglet", "pig", "animal", "donkey", FARM_FRAMES),
    TaxonomyChain("duckling", "duck", "bird", "goose", BIRD_FRAMES),
    TaxonomyChain("rooster", "chicken", "bird", "duck", BIRD_FRAMES),
    TaxonomyChain("grandmother", "woman", "person", "man", ADULT_FRAMES),
    TaxonomyChain("grandfather", "man", "person", "woman", ADULT_FRAMES),
    TaxonomyChain("schoolgirl", "girl", "child", "boy", CHILD_FRAMES),
    TaxonomyChain("schoolboy", "boy", "child", "girl", CHILD_FRAMES),
    TaxonomyChain("pickup truck", "truck", "vehicle", "bus", VEHICLE_FRAMES),
    TaxonomyChain("convertible", "car", "vehicle", "van", VEHICLE_FRAMES),
    TaxonomyChain("school bus", "bus", "vehicle", "truck", VEHICLE_FRAMES),
    TaxonomyChain("dirt bike", "motorcycle", "vehicle", "car", VEHICLE_FRAMES),
    TaxonomyChain("acoustic guitar", "guitar", "musical instrument", "violin", INSTRUMENT_FRAMES),
    TaxonomyChain("grand piano", "piano", "musical instrument", "harp", INSTRUMENT_FRAMES),
    TaxonomyChain("snare drum", "drum", "musical instrument", "trumpet", INSTRUMENT_FRAMES),
    TaxonomyChain("alto saxophone", "saxophone", "musical instrument", "flute", INSTRUMENT_FRAMES),
)


def hypernym_triple(chain: TaxonomyChain, rng: random.Random) -> Triple:
    frame = rng.choice(chain.frames)
    someone = with_article(rng.choice(ADULTS))

    def scene_with(noun: str) -> str:
        return as_sentence(frame.format(x=with_article(noun), someone=someone))

    return Triple(scene_with(chain.middle), scene_with(chain.general), scene_with(chain.specific),
                  scene_with(chain.sibling))


# ---------------------------------------------------------------------------- negation

class NegatableScene(NamedTuple):
    """Someone doing `activity` at `place`.

    Negating a state in `ruled_out` is entailed (a swimmer is not dry); negating a detail in
    `left_open` is neutral (a swimmer may or may not be a professional).
    """

    activity: str
    place: str
    ruled_out: tuple[str, ...]
    left_open: tuple[str, ...]
    people: tuple[str, ...] = EVERYONE


NEGATABLE_SCENES = (
    NegatableScene("riding a bicycle", "down a steep hill", ("walking", "asleep"),
                   ("wearing a helmet", "in a race")),
    NegatableScene("swimming laps", "in an outdoor pool", ("dry", "sitting in an office"),
                   ("a professional swimmer", "training for a race"), NON_EXPERTS),
    NegatableScene("cooking pasta", "in a small kitchen", ("outdoors", "asleep"),
                   ("following a recipe", "a professional cook"), NON_EXPERTS),
    NegatableScene("reading a thick book", "on a crowded train", ("driving the train", "asleep"),
                   ("enjoying the book", "on the way to work")),
    NegatableScene("painting a wooden fence", "behind a farmhouse", ("indoors", "asleep"),
                   ("being paid for the work", "using a brush")),
    NegatableScene("carrying a heavy box", "up the stairs", ("empty-handed", "sitting down"),
                   ("moving to a new home", "in a hurry"), ADULTS),
    NegatableScene("sleeping on a bench", "in the park", ("awake", "running"),
                   ("waiting for anyone", "snoring")),
    NegatableScene("planting flowers", "in a front garden", ("asleep", "sitting on a couch"),
                   ("wearing gloves", "a professional gardener"), NON_EXPERTS),
    NegatableScene("singing", "on a stage in front of a crowd", ("alone", "silent"),
                   ("nervous", "being paid")),
    NegatableScene("fishing", "from a wooden pier", ("indoors", "in a classroom"),
                   ("catching anything", "alone")),
    NegatableScene("washing dishes", "at the kitchen sink", ("outside", "asleep"),
                   ("using hot water", "in a good mood")),
    NegatableScene("climbing a rock wall", "at an indoor gym", ("sitting down", "outdoors"),
                   ("wearing a harness", "a beginner")),
    NegatableScene("jogging", "along the beach at sunrise", ("sitting down", "indoors"),
                   ("listening to music", "training for a race")),
    NegatableScene("driving a taxi", "through the city", ("walking", "asleep"),
                   ("carrying any passengers", "lost"), GROWN_UPS),
    NegatableScene("writing a letter", "at a wooden desk", ("asleep", "running"),
                   ("writing to a friend", "using a pen")),
    NegatableScene("waiting for a bus", "at a busy corner", ("on the bus yet", "at home"),
                   ("late for work", "going to school")),
    NegatableScene("feeding ducks", "at the edge of a pond", ("indoors", "asleep"),
                   ("alone", "a tourist"), NON_EXPERTS),
    NegatableScene("mowing the lawn", "behind a small house", ("indoors", "sitting on a couch"),
                   ("being paid", "in a hurry"), ADULTS),
    NegatableScene("changing a flat tire", "on the side of the road", ("driving", "indoors"),
                   ("a mechanic", "late for an appointment"), GROWN_UPS),
    NegatableScene("teaching a math class", "at a high school", ("alone", "asleep"),
                   ("a new teacher", "in a good mood"), ("woman", "man", "young woman", "young man", "teacher")),
    NegatableScene("playing the violin", "in a subway station", ("asleep", "empty-handed"),
                   ("playing for money", "a professional musician"), NON_EXPERTS),
)


def negation_triple(scene: NegatableScene, rng: random.Random) -> Triple:
    person = rng.choice(scene.people)
    someone, the_person = with_article(person), f"the {person}"
    premise = f"{someone} is {scene.activity} {scene.place}"
    contradiction = rng.choices((
        f"{someone} is not {scene.activity} {scene.place}",
        f"nobody is {scene.activity} {scene.place}",
        f"{the_person} is not {scene.activity}",
    ), weights=(2, 1, 1))[0]
    return Triple(as_sentence(premise), as_sentence(f"{the_person} is not {rng.choice(scene.ruled_out)}"),
                  as_sentence(f"{the_person} is not {rng.choice(scene.left_open)}"), as_sentence(contradiction))


# ---------------------------------------------------------------------------- antonym

class AntonymScene(NamedTuple):
    """Templates around one gradable or binary word (`{a}`: "a nurse", `{the}`: "the nurse").

    The contradiction swaps in the antonym; the entailment uses a synonym or the negated antonym;
    the neutral strengthens the word or mentions the antonym about something else.
    """

    premise: str
    entailment: str
    neutral: str
    contradiction: str
    people: tuple[str, ...] = EVERYONE


ANTONYM_SCENES = (
    AntonymScene("{a} is sitting on a bench near the fountain",
                 "{the} is seated near the fountain",
                 "{the} is sitting next to someone who is standing",
                 "{a} is standing near the fountain"),
    AntonymScene("{a} is carrying an empty bucket across the yard",
                 "{the} is carrying a bucket with nothing in it",
                 "{the} is carrying a large bucket across the yard",
                 "{a} is carrying a full bucket across the yard"),
    AntonymScene("{a} is standing in front of an open door",
                 "{the} is standing in front of a door that is not closed",
                 "{a} is standing in front of an open red door",
                 "{a} is standing in front of a closed door"),
    AntonymScene("{a} is swimming in cold water near the rocks",
                 "The water is not warm",
                 "{a} is swimming in freezing water near the rocks",
                 "{a} is swimming in warm water near the rocks"),
    AntonymScene("{a} is asleep on the couch in the living room",
                 "{the} is sleeping on the couch",
                 "{the} is dreaming on the couch",
                 "{the} is wide awake on the couch"),
    AntonymScene("{a} with dirty hands is fixing an old car",
                 "{the}'s hands are not clean",
                 "{the}'s hands are filthy",
                 "{a} with clean hands is fixing an old car",
                 ("mechanic", "man", "woman", "young man", "young woman", "teenager")),
    AntonymScene("{a} is hanging wet laundry on a line in the yard",
                 "The laundry is not dry yet",
                 "The laundry is dripping onto the grass",
                 "{a} is hanging dry laundry on a line in the yard",
                 ADULTS),
    AntonymScene("{a} is walking through a crowded market",
                 "{the} is walking through a market full of people",
                 "{the} is walking through a market that is less crowded than usual",
                 "{a} is walking through an empty market"),
    AntonymScene("an old {noun} is feeding pigeons in the park",
                 "an elderly {noun} is feeding pigeons in the park",
                 "a retired {noun} is feeding pigeons in the park",
                 "a young {noun} is feeding pigeons in the park",
                 ("man", "woman")),
    AntonymScene("{a} is smiling at a photograph",
                 "{the} is not frowning",
                 "{the} is laughing at a photograph",
                 "{a} is frowning at a photograph"),
    AntonymScene("{a} is reading a book in a dark room",
                 "{the} is reading in a room that is not bright",
                 "{the} is reading a book by candlelight in a dark room",
                 "{a} is reading a book in a brightly lit room"),
    AntonymScene("{a} is eating dinner in a quiet restaurant",
                 "The restaurant is not noisy",
                 "The restaurant is nearly empty",
                 "{a} is eating dinner in a noisy restaurant"),
    AntonymScene("{a} is riding a bicycle up a steep hill",
                 "{the} is cycling uphill",
                 "{the} is riding a bicycle up the steepest hill in town",
                 "{a} is riding a bicycle down a steep hill"),
    AntonymScene("{a} is walking slowly across the street",
                 "{the} is not hurrying across the street",
                 "{the} is walking slowly across an empty street",
                 "{a} is running across the street"),
    AntonymScene("{a} is doing homework inside a library",
                 "{the} is doing homework indoors",
                 "{the} is doing homework inside a quiet library",
                 "{a} is doing homework outdoors",
                 ("student", "girl", "boy", "teenager")),
    AntonymScene("{a} is standing outside a closed shop",
                 "The shop is not open",
                 "The shop is closed for the holiday",
                 "{a} is standing outside an open shop"),
    AntonymScene("{a} is walking a dog along the road at night",
                 "{the} is walking a dog after dark",
                 "{the} is walking a dog along the road at midnight",
                 "{a} is walking a dog along the road at noon"),
    AntonymScene("{a} is drinking a cup of hot coffee on the porch",
                 "The coffee is not cold",
                 "{the} is drinking hot coffee with milk on the porch",
                 "{a} is drinking a cup of iced coffee on the porch",
                 ADULTS),
    AntonymScene("{a} is riding a brand new bicycle down the street",
                 "The bicycle is not old",
                 "{the} is riding an expensive new bicycle",
                 "{a} is riding an old, rusty bicycle down the street"),
    AntonymScene("{a} is lifting a heavy box into a truck",
                 "The box is not light",
                 "The box is full of books",
                 "{a} is lifting a light box into a truck",
                 ADULTS),
    AntonymScene("{a} is crying at a bus stop",
                 "{the} is in tears at a bus stop",
                 "{the} is crying at a bus stop because of bad news",
                 "{a} is laughing happily at a bus stop"),
    AntonymScene("{a} is climbing up a ladder",
                 "{the} is going up a ladder",
                 "{the} is climbing up a tall ladder",
                 "{a} is climbing down a ladder"),
    AntonymScene("{a} is walking into a bank",
                 "{the} is going inside a bank",
                 "{the} is walking into a bank to open an account",
                 "{a} is walking out of a bank",
                 ADULTS),
    AntonymScene("{a} is turning on the lights in a classroom",
                 "{the} is switching the lights on",
                 "{the} is turning on the lights in an empty classroom",
                 "{a} is turning off the lights in a classroom"),
)


def antonym_triple(scene: AntonymScene, rng: random.Random) -> Triple:
    person = rng.choice(scene.people)
    return fill_templates(scene, a=with_article(person), the=f"the {person}", noun=person)


# ---------------------------------------------------------------------------- quantifier

class Crowd(NamedTuple):
    plural: str
    singular: str
    human: bool = True


KIDS = (Crowd("children", "child"), Crowd("boys", "boy"), Crowd("girls", "girl"))


class GroupActivity(NamedTuple):
    activity: str
    place: str
    crowds: tuple[Crowd, ...]


GROUP_ACTIVITIES = (
    GroupActivity("building a sandcastle", "on the beach", KIDS),
    GroupActivity("playing soccer", "in the park", KIDS + (Crowd("teenagers", "teenager"),)),
    GroupActivity("waiting for a bus", "at the corner",
                  (Crowd("men", "man"), Crowd("women", "woman"), Crowd("students", "student"))),
    GroupActivity("painting a wall", "in the hallway", (Crowd("workers", "worker"), Crowd("painters", "painter"))),
    GroupActivity("playing jazz", "on the stage", (Crowd("musicians", "musician"),)),
    GroupActivity("eating lunch", "at the picnic table",
                  (Crowd("men", "man"), Crowd("women", "woman"), Crowd("students", "student"))),
    GroupActivity("chasing a ball", "in the yard", (Crowd("dogs", "dog", False), Crowd("puppies", "puppy", False))),
    GroupActivity("studying", "in the library", (Crowd("students", "student"),)),
    GroupActivity("fishing", "on the pier", (Crowd("men", "man"), Crowd("women", "woman"))),
    GroupActivity("washing a fire truck", "in the driveway", (Crowd("firefighters", "firefighter"),)),
    GroupActivity("resting", "by the side of the road", (Crowd("cyclists", "cyclist"), Crowd("hikers", "hiker"))),
    GroupActivity("taking photos", "in front of the cathedral", (Crowd("tourists", "tourist"),)),
    GroupActivity("chopping vegetables", "in the kitchen", (Crowd("cooks", "cook"), Crowd("chefs", "chef"))),
    GroupActivity("grazing", "in the field",
                  (Crowd("horses", "horse", False), Crowd("cows", "cow", False), Crowd("sheep", "sheep", False))),
    GroupActivity("jumping rope", "on the sidewalk", (Crowd("girls", "girl"), Crowd("children", "child"))),
    GroupActivity("dancing", "in the street", (Crowd("people", "person"), Crowd("teenagers", "teenager"))),
    GroupActivity("swimming", "in the lake", (Crowd("ducks", "duck", False), Crowd("teenagers", "teenager"))),
    GroupActivity("singing", "on the steps of the church",
                  (Crowd("students", "student"), Crowd("children", "child"))),
)


def quantifier_triple(group: GroupActivity, rng: random.Random) -> Triple:
    crowd = rng.choice(group.crowds)
    build = counted_crowd_triple if rng.random() < 0.75 else whole_crowd_triple
    return Triple(*(as_sentence(text) for text in build(group, crowd, rng)))


def counted_crowd_triple(group: GroupActivity, crowd: Crowd, rng: random.Random) -> Triple:
    """A premise like "three children are ...", read as exactly three, as SNLI annotators read numbers."""
    n = rng.randint(2, 5)
    many, one, doing, where = crowd.plural, crowd.singular, group.activity, group.place
    entailments = [
        f"some {many} are {doing} {where}",
        f"{many} are {doing} {where}",
        f"more than one {one} is {doing} {where}",
        f"fewer than {NUMBER_WORDS[n + 2]} {many} are {doing} {where}",
    ]
    if n >= 3:
        entailments.append(f"at least {NUMBER_WORDS[n - 1]} {many} are {doing} {where}")
    neutrals = [
        f"every {one} {where} is {doing}",
        f"most of the {many} {where} are {doing}",
        f"more than {NUMBER_WORDS[n]} {many} are {where}",
    ]
    other_count = rng.choice([k for k in range(2, 8) if k != n])
    contradictions = [
        f"no {many} are {doing} {where}",
        f"only one {one} is {doing} {where}",
        f"at least {NUMBER_WORDS[n + 1]} {many} are {doing} {where}",
        f"{NUMBER_WORDS[other_count]} {many} are {doing} {where}",
        f"{with_article(one)} is {doing} {where} alone",
        f"dozens of {many} are {doing} {where}",
    ]
    if crowd.human:
        contradictions.append(f"nobody is {doing} {where}")
    return Triple(f"{NUMBER_WORDS[n]} {many} are {doing} {where}", rng.choice(entailments), rng.choice(neutrals),
                  rng.choice(contradictions))


def whole_crowd_triple(group: GroupActivity, crowd: Crowd, rng: random.Random) -> Triple:
    many, one, doing, where = crowd.plural, crowd.singular, group.activity, group.place
    count = NUMBER_WORDS[rng.randint(2, 6)]
    return Triple(
        f"all the {many} {where} are {doing}",
        rng.choice((f"every {one} {where} is {doing}", f"the {many} {where} are {doing}")),
        rng.choice((f"there are {count} {many} {where}", f"more than {count} {many} are {where}")),
        rng.choice((f"one {one} {where} is not {doing}", f"none of the {many} {where} are {doing}",
                    f"some of the {many} {where} are not {doing}")),
    )


# ---------------------------------------------------------------------------- added detail

class DetailedScene(NamedTuple):
    """Someone wearing a colored garment doing `activity` at `place`.

    Dropping the garment or the place is entailed; adding a time, a purpose from `extras` or an
    adjective is neutral; changing the garment's color contradicts.
    """

    activity: str
    place: str
    extras: tuple[str, ...]
    people: tuple[str, ...] = EVERYONE


DETAILED_SCENES = (
    DetailedScene("waiting for the bus", "at a busy corner", ("to get to work", "after a long shift"), ADULTS),
    DetailedScene("reading a newspaper", "on a park bench", ("while eating lunch", "before going to work"), ADULTS),
    DetailedScene("buying vegetables", "at an outdoor market", ("for a family dinner", "with cash")),
    DetailedScene("painting a fence", "behind a small house", ("for a neighbor", "to earn extra money")),
    DetailedScene("walking a dog", "along the river", ("after dinner", "for a neighbor who is away")),
    DetailedScene("taking photos", "in front of a fountain", ("for a school project", "with a new camera")),
    DetailedScene("selling flowers", "on a street corner", ("to pay for college", "for the first time")),
    DetailedScene("riding a scooter", "through the town square", ("on the way to school", "to get to a meeting")),
    DetailedScene("sweeping the floor", "of a small shop", ("before closing time", "after a busy day")),
    DetailedScene("carrying a ladder", "across a parking lot", ("to fix a broken light", "for a coworker"), ADULTS),
    DetailedScene("drinking coffee", "outside a cafe", ("while waiting for a friend", "after a morning run"), ADULTS),
    DetailedScene("looking at a map", "at a train station", ("to find a hotel", "after missing a train")),
    DetailedScene("feeding pigeons", "in a city park", ("with leftover bread", "during a lunch break")),
    DetailedScene("tying a shoelace", "on the steps of a library", ("before a run", "while talking on the phone")),
    DetailedScene("pushing a stroller", "through a shopping mall",
                  ("to buy a birthday present", "on a rainy afternoon"), ADULTS),
    DetailedScene("watering plants", "on a balcony", ("before leaving for work", "with a watering can"), ADULTS),
    DetailedScene("playing a guitar", "at the entrance of a subway station",
                  ("for tips", "to practice for a concert")),
    DetailedScene("standing in line", "outside a movie theater",
                  ("to buy tickets for a new film", "with two friends")),
)
COLORS = ("red", "blue", "green", "yellow", "black", "white", "orange", "purple", "gray")
GARMENTS = ("coat", "jacket", "raincoat", "sweater", "hat", "shirt")
TIMES = ("early in the morning", "on a Sunday afternoon", "late in the evening", "on a cold day")
ADJECTIVES = ("tall", "tired", "cheerful", "nervous", "friendly")


def added_detail_triple(scene: DetailedScene, rng: random.Random) -> Triple:
    person, garment = rng.choice(scene.people), rng.choice(GARMENTS)
    color, other_color = rng.sample(COLORS, 2)
    someone, doing, where = with_article(person), scene.activity, scene.place
    outfit, other_outfit = with_article(f"{color} {garment}"), with_article(f"{other_color} {garment}")
    entailment = rng.choice((
        f"{someone} is {doing} {where}",
        f"{someone} in {outfit} is {doing}",
        f"{someone} is wearing {outfit}",
        f"someone in {outfit} is {doing}",
    ))
    neutral = rng.choice((
        f"{someone} in {outfit} is {doing} {where} {rng.choice(TIMES)}",
        f"{someone} in {outfit} is {doing} {where} {rng.choice(scene.extras)}",
        f"{with_article(rng.choice(ADJECTIVES) + ' ' + person)} in {outfit} is {doing} {where}",
        f"{someone} is {doing} {rng.choice(scene.extras)}",
    ))
    contradiction = rng.choice((
        f"{someone} in {other_outfit} is {doing} {where}",
        f"{someone} in {other_outfit} is {doing}",
        f"the {person} is wearing {other_outfit}",
    ))
    premise = f"{someone} in {outfit} is {doing} {where}"
    return Triple(*(as_sentence(text) for text in (premise, entailment, neutral, contradiction)))


# ---------------------------------------------------------------------------- swapped roles

# Convention for swapping who does what to whom (SNLI has no written rule, so we chose one):
# - the premise joins an exclusive relation (only one side can chase, carry or push the other at a
#   given moment) with a directed but non-exclusive one (smiling at, talking to);
# - swapping the roles of the exclusive relation is a contradiction: in one scene the carried child
#   cannot also be carrying the adult;
# - swapping the roles of the non-exclusive relation is neutral: the boy may or may not smile back;
# - restating the same roles in the passive voice, or spelling out the pronoun, is entailed.
# Symmetric relations (dancing with, shaking hands with) are left out: their swap would be entailed.

class RoleRelation(NamedTuple):
    """An exclusive relation between an agent `{a}` and a patient `{b}`, in both voices.

    `patients` pairs each noun with its object pronoun; `attentions` are the directed but
    non-exclusive acts (smiling at, talking to) the premise adds after "and".
    """

    active: str
    passive: str
    agents: tuple[str, ...]
    patients: tuple[tuple[str, str], ...]
    attentions: tuple[str, ...]


GUIDING_ADULTS = ("woman", "man", "young woman", "young man", "nurse", "teacher", "lifeguard", "firefighter",
                  "babysitter")
CHILD_PATIENTS = (("little boy", "him"), ("little girl", "her"), ("boy", "him"), ("girl", "her"))
ADULT_PATIENTS = (("man", "him"), ("woman", "her"), ("young man", "him"), ("young woman", "her"))
ELDERLY_PATIENTS = (("old man", "him"), ("old woman", "her"))

ROLE_RELATIONS = (
    RoleRelation("{a} is chasing {b} around the playground", "{b} is being chased around the playground by {a}",
                 CHILDREN, CHILD_PATIENTS, ("laughing at", "shouting at")),
    RoleRelation("{a} is carrying {b} up the stairs", "{b} is being carried up the stairs by {a}",
                 GUIDING_ADULTS, CHILD_PATIENTS, ("singing to", "talking to")),
    RoleRelation("{a} is pushing {b} on a swing", "{b} is being pushed on a swing by {a}",
                 GUIDING_ADULTS + CHILDREN, CHILD_PATIENTS, ("smiling at", "talking to")),
    RoleRelation("{a} is pulling {b} on a sled through the snow",
                 "{b} is being pulled on a sled through the snow by {a}",
                 GUIDING_ADULTS + CHILDREN, CHILD_PATIENTS, ("laughing at", "talking to")),
    RoleRelation("{a} is teaching {b} to ride a bicycle", "{b} is being taught to ride a bicycle by {a}",
                 GUIDING_ADULTS, CHILD_PATIENTS, ("cheering for", "smiling at")),
    RoleRelation("{a} is giving {b} a haircut in the kitchen", "{b} is getting a haircut from {a} in the kitchen",
                 GUIDING_ADULTS, ADULT_PATIENTS + CHILD_PATIENTS, ("talking to", "singing to")),
    RoleRelation("{a} is pushing {b} in a wheelchair through the park",
                 "{b} is being pushed in a wheelchair through the park by {a}",
                 GUIDING_ADULTS, ELDERLY_PATIENTS, ("talking to", "smiling at")),
    RoleRelation("{a} is lifting {b} into the air", "{b} is being lifted into the air by {a}",
                 GUIDING_ADULTS, CHILD_PATIENTS, ("smiling at", "singing to")),
    RoleRelation("{a} is following {b} down a narrow street", "{b} is being followed down a narrow street by {a}",
                 ADULTS, ADULT_PATIENTS + ELDERLY_PATIENTS, ("shouting at", "waving at")),
    RoleRelation("{a} is giving {b} a piggyback ride on the beach",
                 "{b} is getting a piggyback ride from {a} on the beach",
                 GUIDING_ADULTS, CHILD_PATIENTS, ("singing to", "talking to")),
    RoleRelation("{a} is pulling {b} out of the water", "{b} is being pulled out of the water by {a}",
                 GUIDING_ADULTS, ADULT_PATIENTS + CHILD_PATIENTS, ("shouting to", "talking to")),
    RoleRelation("{a} is leading {b} across a busy street", "{b} is being led across a busy street by {a}",
                 GUIDING_ADULTS, CHILD_PATIENTS + ELDERLY_PATIENTS, ("talking to", "smiling at")),
    RoleRelation("{a} is pushing {b} in a shopping cart", "{b} is being pushed in a shopping cart by {a}",
                 GUIDING_ADULTS, CHILD_PATIENTS, ("making faces at", "singing to")),
)


def swapped_roles_triple(relation: RoleRelation, rng: random.Random) -> Triple:
    agent, (patient, pronoun) = distinct_participants(relation, rng)
    a, b = with_article(agent), with_article(patient)
    attention = rng.choice(relation.attentions)
    premise = f"{relation.active.format(a=a, b=b)} and {attention} {pronoun}"
    entailment = rng.choice((relation.passive.format(a=a, b=b), f"{a} is {attention} {b}"))
    return Triple(as_sentence(premise), as_sentence(entailment), as_sentence(f"{b} is {attention} {a}"),
                  as_sentence(relation.active.format(a=b, b=a)))


def distinct_participants(relation: RoleRelation, rng: random.Random) -> tuple[str, tuple[str, str]]:
    """An agent and a patient with different head nouns, so the two stay distinguishable."""
    while True:
        agent, patient = rng.choice(relation.agents), rng.choice(relation.patients)
        if head_noun(agent) != head_noun(patient[0]):
            return agent, patient


# ---------------------------------------------------------------------------- paraphrase

class ParaphraseScene(NamedTuple):
    """Templates where `{a2}` is a synonym of the premise's subject `{a}`.

    The entailment rewords the premise; the neutral rewords it with a more specific word (a kind
    of the object, a manner of the action); the contradiction rewords it in an incompatible place.
    """

    premise: str
    entailment: str
    neutral: str
    contradiction: str
    adults_only: bool = False


ADULT_SYNONYMS = (
    ("man", "guy"), ("woman", "lady"), ("police officer", "cop"), ("doctor", "physician"),
    ("mother", "mom"), ("father", "dad"), ("old man", "elderly man"), ("old woman", "elderly woman"),
)
CHILD_SYNONYMS = (("child", "kid"), ("little boy", "small boy"), ("little girl", "small girl"), ("teenager", "teen"))

PARAPHRASE_SCENES = (
    ParaphraseScene("{a} is repairing a bicycle in the garage",
                    "{a2} is fixing a bike in the garage",
                    "{a2} is fixing a racing bike in the garage",
                    "{a2} is fixing a bike in the kitchen"),
    ParaphraseScene("{a} is purchasing fresh bread at a bakery",
                    "{a2} is buying fresh bread at a bakery",
                    "{a2} is buying a baguette at a bakery",
                    "{a2} is buying fresh bread at a gas station"),
    ParaphraseScene("{a} is chatting with a customer in a small shop",
                    "{a2} is talking to a customer in a little store",
                    "{a2} is whispering to a customer in a small shop",
                    "{a2} is talking to a customer at the airport",
                    adults_only=True),
    ParaphraseScene("{a} is resting on a sofa in the living room",
                    "{a2} is relaxing on a couch in the living room",
                    "{a2} is napping on a couch in the living room",
                    "{a2} is relaxing on a couch in a hotel lobby"),
    ParaphraseScene("{a} is gazing at the ocean from a cliff",
                    "{a2} is looking at the sea from a cliff",
                    "{a2} is watching whales in the sea from a cliff",
                    "{a2} is looking at the sea from a small boat"),
    ParaphraseScene("{a} is tossing a ball to a dog in the yard",
                    "{a2} is throwing a ball to a dog in the yard",
                    "{a2} is throwing a tennis ball to a dog in the yard",
                    "{a2} is throwing a ball to a dog in the living room"),
    ParaphraseScene("{a} is preparing dinner in a small kitchen",
                    "{a2} is making dinner in a tiny kitchen",
                    "{a2} is cooking spaghetti for dinner in a small kitchen",
                    "{a2} is making dinner over a campfire"),
    ParaphraseScene("{a} is photographing a bridge from the riverbank",
                    "{a2} is taking a picture of a bridge from the riverbank",
                    "{a2} is taking a picture of a bridge with a phone",
                    "{a2} is taking a picture of a bridge from a boat"),
    ParaphraseScene("{a} is assembling a bookshelf in a bedroom",
                    "{a2} is putting together a bookshelf in a bedroom",
                    "{a2} is putting together a pine bookshelf in a bedroom",
                    "{a2} is putting together a bookshelf in a furniture store",
                    adults_only=True),
    ParaphraseScene("{a} is jogging along a path in the park",
                    "{a2} is running along a path in the park",
                    "{a2} is training for a marathon on a path in the park",
                    "{a2} is running on a treadmill in a gym"),
    ParaphraseScene("{a} is shutting the curtains in a hotel room",
                    "{a2} is closing the curtains in a hotel room",
                    "{a2} is closing the heavy velvet curtains in a hotel room",
                    "{a2} is closing the curtains in a classroom"),
    ParaphraseScene("{a} is eating a big breakfast at a diner",
                    "{a2} is having a large breakfast at a diner",
                    "{a2} is eating pancakes for breakfast at a diner",
                    "{a2} is having a large breakfast at home"),
    ParaphraseScene("{a} is examining an x-ray in a hospital hallway",
                    "{a2} is looking closely at an x-ray in a hospital hallway",
                    "{a2} is looking at an x-ray of a broken arm in a hospital hallway",
                    "{a2} is looking closely at an x-ray in a parking lot",
                    adults_only=True),
    ParaphraseScene("{a} is dumping trash into a dumpster behind a restaurant",
                    "{a2} is throwing garbage into a dumpster behind a restaurant",
                    "{a2} is throwing old pizza boxes into a dumpster behind a restaurant",
                    "{a2} is throwing garbage into a dumpster behind a school",
                    adults_only=True),
    ParaphraseScene("{a} is wrapping a present on the kitchen table",
                    "{a2} is wrapping a gift on the kitchen table",
                    "{a2} is wrapping a birthday gift on the kitchen table",
                    "{a2} is wrapping a gift at the post office counter"),
    ParaphraseScene("{a} is riding a bicycle along the shore",
                    "{a2} is cycling along the shore",
                    "{a2} is cycling along the shore on a mountain bike",
                    "{a2} is cycling through a thick forest"),
    ParaphraseScene("{a} is conversing with a neighbor over a fence",
                    "{a2} is talking to a neighbor over a fence",
                    "{a2} is gossiping with a neighbor over a fence",
                    "{a2} is talking to a neighbor on a crowded train"),
    ParaphraseScene("{a} is sketching a portrait at a street fair",
                    "{a2} is drawing a portrait at a street fair",
                    "{a2} is drawing a portrait of a child at a street fair",
                    "{a2} is drawing a portrait in a quiet studio"),
    ParaphraseScene("{a} is carrying firewood into a log cabin",
                    "{a2} is bringing wood into a log cabin",
                    "{a2} is bringing oak logs into a log cabin",
                    "{a2} is bringing wood into a city apartment"),
    ParaphraseScene("{a} is strolling through a quiet village",
                    "{a2} is walking slowly through a quiet village",
                    "{a2} is walking slowly through a quiet mountain village",
                    "{a2} is walking slowly through a busy airport"),
    ParaphraseScene("{a} is mopping the floor of a hospital corridor",
                    "{a2} is cleaning the floor of a hospital hallway",
                    "{a2} is cleaning a muddy floor in a hospital hallway",
                    "{a2} is cleaning the floor of a school gym",
                    adults_only=True),
    ParaphraseScene("{a} is beginning a speech at a wedding",
                    "{a2} is starting a speech at a wedding",
                    "{a2} is starting a funny speech at a wedding",
                    "{a2} is starting a speech at a funeral",
                    adults_only=True),
)


def paraphrase_triple(scene: ParaphraseScene, rng: random.Random) -> Triple:
    synonyms = ADULT_SYNONYMS if scene.adults_only else ADULT_SYNONYMS + CHILD_SYNONYMS
    said, reworded = rng.sample(rng.choice(synonyms), 2)
    return fill_templates(scene, a=with_article(said), a2=with_article(reworded))


# ---------------------------------------------------------------------------- unrelated event

class EventScene(NamedTuple):
    """Someone doing `activity`: what it `implies` (entailed), what can go on at the same time
    (`compatible`, neutral) and what the same person cannot be doing at that moment (contradiction)."""

    activity: str
    implies: tuple[str, ...]
    compatible: tuple[str, ...]
    incompatible: tuple[str, ...]
    people: tuple[str, ...] = EVERYONE


EVENT_SCENES = (
    EventScene("jogging along the river early in the morning",
               implies=("exercising outdoors",),
               compatible=("listening to music", "training for a marathon"),
               incompatible=("sleeping in bed", "sitting at a desk in an office")),
    EventScene("swimming across a lake",
               implies=("in the water",),
               compatible=("training for a triathlon", "swimming toward a small island"),
               incompatible=("sitting in a classroom", "riding a crowded bus")),
    EventScene("cooking soup on a camping stove",
               implies=("preparing food",),
               compatible=("cooking for a group of friends", "making vegetable soup"),
               incompatible=("swimming in the ocean", "sleeping in a hotel room"),
               people=ADULTS),
    EventScene("riding a horse across an open field",
               implies=("outdoors", "on horseback"),
               compatible=("riding to a nearby farm", "riding a horse for the first time"),
               incompatible=("driving a truck on the highway", "taking a shower")),
    EventScene("playing chess at a table in the park",
               implies=("playing a board game",),
               compatible=("winning the game", "playing against a friend"),
               incompatible=("running a marathon", "climbing a mountain")),
    EventScene("painting a portrait in a sunny studio",
               implies=("making a painting",),
               compatible=("painting a portrait of a friend", "listening to the radio"),
               incompatible=("skiing down a mountain", "swimming in a pool")),
    EventScene("sleeping in a hammock between two trees",
               implies=("resting outdoors", "lying down"),
               compatible=("dreaming", "taking a nap after lunch"),
               incompatible=("playing basketball", "cooking dinner in a kitchen")),
    EventScene("shoveling snow from a driveway",
               implies=("working outside",),
               compatible=("clearing snow before going to work", "wearing warm gloves"),
               incompatible=("sunbathing on a beach", "swimming in a warm pool")),
    EventScene("typing on a laptop in a coffee shop",
               implies=("using a computer",),
               compatible=("writing an email", "waiting for a friend"),
               incompatible=("riding a bicycle down a mountain trail", "sleeping in a tent")),
    EventScene("singing with a church choir",
               implies=("singing with other people",),
               compatible=("singing at a wedding", "singing a solo"),
               incompatible=("sleeping at home", "playing tennis")),
    EventScene("climbing a ladder to reach a roof",
               implies=("going up a ladder",),
               compatible=("fixing a leak in the roof", "cleaning the gutters"),
               incompatible=("lying in a bathtub", "sitting in a movie theater"),
               people=ADULTS),
    EventScene("feeding chickens on a small farm",
               implies=("taking care of animals",),
               compatible=("feeding the chickens before breakfast", "collecting eggs"),
               incompatible=("sitting in a movie theater", "surfing a big wave")),
    EventScene("rowing a boat across a calm lake",
               implies=("on the water",),
               compatible=("rowing toward an island", "rowing for exercise"),
               incompatible=("walking through a shopping mall", "sleeping in bed")),
    EventScene("baking bread in a small kitchen",
               implies=("making bread",),
               compatible=("baking bread for a neighbor", "baking bread for the first time"),
               incompatible=("surfing a big wave", "hiking in the mountains")),
    EventScene("driving a bus through the city",
               implies=("operating a vehicle", "behind the wheel"),
               compatible=("driving a bus full of tourists", "running late"),
               incompatible=("taking a shower", "sleeping on a beach"),
               people=ADULTS),
    EventScene("skiing down a snowy mountain",
               implies=("outside in the snow",),
               compatible=("skiing with friends", "skiing for the first time"),
               incompatible=("sitting at a desk in an office", "swimming in the sea")),
    EventScene("playing the violin in an orchestra",
               implies=("playing an instrument", "making music"),
               compatible=("playing a piece by Mozart", "reading sheet music"),
               incompatible=("mowing a lawn", "riding a horse")),
    EventScene("washing a car in the driveway",
               implies=("cleaning a car",),
               compatible=("washing a car to earn money", "washing a car with a sponge"),
               incompatible=("flying a plane", "sleeping in a tent")),
    EventScene("teaching a class of young students",
               implies=("working with children",),
               compatible=("teaching a history lesson", "teaching on the first day of school"),
               incompatible=("swimming in the ocean", "riding a roller coaster"),
               people=ADULTS),
    EventScene("hiking up a rocky trail",
               implies=("walking outdoors",),
               compatible=("hiking to a waterfall", "carrying a heavy backpack"),
               incompatible=("watching television on a couch", "sitting in a dentist's chair")),
    EventScene("milking a cow in a barn",
               implies=("working with an animal",),
               compatible=("milking a cow by hand", "milking a cow before sunrise"),
               incompatible=("jogging on a beach", "sitting in a classroom")),
    EventScene("dancing at a wedding reception",
               implies=("attending a wedding",),
               compatible=("dancing with a cousin", "dancing to a slow song"),
               incompatible=("working in a coal mine", "taking a nap in a car")),
)


def unrelated_event_triple(scene: EventScene, rng: random.Random) -> Triple:
    person = rng.choice(scene.people)
    the_person = f"the {person}"
    return Triple(
        as_sentence(f"{with_article(person)} is {scene.activity}"),
        as_sentence(f"{the_person} is {rng.choice(scene.implies)}"),
        as_sentence(f"{the_person} is {rng.choice(scene.compatible)}"),
        as_sentence(f"{the_person} is {rng.choice(scene.incompatible)}"),
    )


# ---------------------------------------------------------------------------- assembling the set

class Phenomenon(NamedTuple):
    name: str
    scenes: Sequence[Any]
    build: Callable[[Any, random.Random], Triple]


PHENOMENA = (
    Phenomenon("hypernym", TAXONOMY_CHAINS, hypernym_triple),
    Phenomenon("negation", NEGATABLE_SCENES, negation_triple),
    Phenomenon("antonym", ANTONYM_SCENES, antonym_triple),
    Phenomenon("quantifier", GROUP_ACTIVITIES, quantifier_triple),
    Phenomenon("added_detail", DETAILED_SCENES, added_detail_triple),
    Phenomenon("swapped_roles", ROLE_RELATIONS, swapped_roles_triple),
    Phenomenon("paraphrase", PARAPHRASE_SCENES, paraphrase_triple),
    Phenomenon("unrelated_event", EVENT_SCENES, unrelated_event_triple),
)


def generate_starter_nli(seed: int = 0) -> dict[str, list[dict]]:
    """The starter set as {"train", "validation", "test"} -> rows of premise/hypothesis/label/phenomenon."""
    rng = random.Random(seed)
    splits: dict[str, list[dict]] = {split: [] for split in SPLITS}
    used_premises: set[str] = set()
    for phenomenon in PHENOMENA:
        for split, scenes in zip(SPLITS, partition_scenes(phenomenon.scenes, rng)):
            for triple in draw_triples(phenomenon, scenes, PREMISES_PER_PHENOMENON[split], rng, used_premises):
                splits[split].extend(rows_of(triple, phenomenon.name))
    for rows in splits.values():
        rng.shuffle(rows)
    return splits


def partition_scenes(scenes: Sequence[Any], rng: random.Random) -> tuple[list, list, list]:
    """Shuffled scenes cut into train, validation and test parts; each scene goes to one part."""
    shuffled = list(scenes)
    rng.shuffle(shuffled)
    held_out = max(2, len(shuffled) // 6)
    return shuffled[2 * held_out:], shuffled[:held_out], shuffled[held_out:2 * held_out]


def draw_triples(phenomenon: Phenomenon, scenes: list, count: int, rng: random.Random,
                 used_premises: set[str]) -> list[Triple]:
    """`count` triples built from `scenes` in turn, each with a premise not used anywhere before."""
    triples: list[Triple] = []
    for attempt in range(100 * count):
        if len(triples) == count:
            break
        triple = phenomenon.build(scenes[attempt % len(scenes)], rng)
        if triple.premise not in used_premises:
            used_premises.add(triple.premise)
            triples.append(triple)
    if len(triples) < count:
        raise RuntimeError(f"{phenomenon.name}: too few distinct premises; add scenes or fillers")
    return triples


def rows_of(triple: Triple, phenomenon: str) -> list[dict]:
    hypotheses = (triple.entailment, triple.neutral, triple.contradiction)
    return [{"premise": triple.premise, "hypothesis": hypothesis, "label": label, "phenomenon": phenomenon}
            for label, hypothesis in enumerate(hypotheses)]


# ---------------------------------------------------------------------------- writing to disk

def write_starter_nli(directory: str | Path, seed: int = 0, generate: Callable | None = None) -> Path:
    """Write train.jsonl, validation.jsonl and test.jsonl (in that order) into `directory`.

    `generate=generate_starter_mnli` writes the MultiNLI-shaped splits instead (validation_mismatched.jsonl last).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for split, rows in (generate or generate_starter_nli)(seed).items():
        write_jsonl(directory / f"{split}.jsonl", rows)
    return directory


# ---------------------------------------------------------------------------- MultiNLI's shape

# MultiNLI tests on genres seen in training (matched) and on genres never trained on
# (mismatched). The starter set's phenomena play the genres: these two are held out of training.
MISMATCHED_PHENOMENA = ("quantifier", "swapped_roles")
MNLI_SPLITS = ("train", "validation", "validation_matched", "validation_mismatched")


def generate_starter_mnli(seed: int = 0) -> dict[str, list[dict]]:
    """The starter set as MultiNLI-shaped splits, with the phenomenon as `genre` and a `pairID`.

    - train, validation: the train and validation rows of the six matched phenomena;
    - validation_matched: the test rows of those six phenomena (90 rows, unseen scenes);
    - validation_mismatched: every row of the two held-out phenomena (180 rows), which
      training never sees, as MultiNLI's mismatched genres.
    """
    starter = generate_starter_nli(seed)
    matched = {split: [row for row in rows if row["phenomenon"] not in MISMATCHED_PHENOMENA]
               for split, rows in starter.items()}
    mismatched = [row for split in SPLITS for row in starter[split] if row["phenomenon"] in MISMATCHED_PHENOMENA]
    parts = dict(zip(MNLI_SPLITS, (matched["train"], matched["validation"], matched["test"], mismatched)))
    return {split: [{"pairID": f"starter-{split}-{i}", "genre": row["phenomenon"], "premise": row["premise"],
                     "hypothesis": row["hypothesis"], "label": row["label"]} for i, row in enumerate(rows)]
            for split, rows in parts.items()}
