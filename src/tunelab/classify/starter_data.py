"""The offline sentiment starter set: short product and service reviews, labelled negative or positive.

Each review names one item, and every item belongs to one split only, so no text is shared between
train, validation and test. The phenomena, one of each label per item: plain statements, negation of
the opposite word, contrast ("..., but ..." where the clause after "but" decides), intensifiers,
recommendations, what the reviewer did (returned it, bought another), comparisons and feelings. A
model that reads only single words is misled by negation, contrast and comparison.
"""

from __future__ import annotations

import random

LABELS = ("negative", "positive")
ITEMS = {
    "train": ("headphones", "blender", "hotel room", "pizza", "novel", "laptop", "backpack", "tent", "coffee maker",
              "phone case", "haircut", "video game", "sofa", "toaster", "jacket", "bicycle", "desk lamp", "kettle",
              "keyboard", "umbrella", "mattress", "running shoes", "camera", "guitar"),
    "validation": ("museum tour", "yoga class", "printer", "water bottle", "board game"),
    "test": ("restaurant", "movie", "vacuum cleaner", "smartwatch", "rain boots", "cookbook", "train ride",
             "wireless speaker", "office chair"),
}
WORDS = {
    "positive": ("excellent", "wonderful", "great", "fantastic", "delightful", "superb", "reliable", "lovely"),
    "negative": ("terrible", "awful", "disappointing", "flimsy", "useless", "dreadful", "poor", "horrible"),
}
# (phenomenon, {label: templates}); {item} is the item, {word} a word of the label, {other} one of the opposite.
PHENOMENA = (
    ("plain", {"positive": ("The {item} is {word}.", "This {item} was {word} from day one."),
               "negative": ("The {item} is {word}.", "This {item} was {word} from day one.")}),
    ("negation", {"positive": ("The {item} is not {other} at all.", "Nothing about the {item} was {other}."),
                  "negative": ("The {item} is not {word_pos} in any way.", "I would not call the {item} {word_pos}.")}),
    ("contrast", {"positive": ("The box looked {other}, but the {item} itself is {word}.",
                               "I expected a {other} {item}, but it turned out {word}."),
                  "negative": ("The box looked {word_pos}, but the {item} itself is {word}.",
                               "I expected a {word_pos} {item}, but it turned out {word}.")}),
    ("intensifier", {"positive": ("Honestly, this {item} is absolutely {word}.", "The {item} is really, really {word}."),
                     "negative": ("Honestly, this {item} is absolutely {word}.", "The {item} is really, really {word}.")}),
    ("recommendation", {"positive": ("I would happily recommend this {item} to my friends.",
                                     "Everyone should get this {item}."),
                        "negative": ("I would never recommend this {item} to anyone.",
                                     "Save your money and skip this {item}.")}),
    ("action", {"positive": ("I already bought a second {item} for my sister.", "I use the {item} every day now."),
                "negative": ("I returned the {item} the very next day.", "The {item} went straight into the bin.")}),
    ("comparison", {"positive": ("This {item} beats every other one I have tried.",
                                 "No {item} I had before comes close to this one."),
                    "negative": ("My old {item} was far better than this one.",
                                 "Even the cheapest {item} would do a better job.")}),
    ("feeling", {"positive": ("The {item} made me smile every single time.", "I am so glad I chose this {item}."),
                 "negative": ("The {item} left me frustrated and annoyed.", "I regret ever paying for this {item}.")}),
)


def generate_starter_sentiment(seed: int = 0) -> dict[str, list[dict]]:
    """{split: rows of text and label}, one row of each label and phenomenon per item, in a seeded order."""
    rng = random.Random(seed)
    splits = {}
    for split, items in ITEMS.items():
        rows = [{"text": _review(rng, item, templates[label], label), "label": label, "phenomenon": phenomenon}
                for item in items for phenomenon, templates in PHENOMENA for label in LABELS]
        rng.shuffle(rows)
        splits[split] = rows
    return splits


def _review(rng: random.Random, item: str, templates: tuple[str, ...], label: str) -> str:
    other = "negative" if label == "positive" else "positive"
    return rng.choice(templates).format(item=item, word=rng.choice(WORDS[label]), other=rng.choice(WORDS[other]),
                                        word_pos=rng.choice(WORDS["positive"]))
