"""Chat data: conversations built from OASST1-style message trees, and the offline starter trees.

OpenAssistant/oasst1 is not a list of conversations but a forest of message trees. Each row is
one message: `message_id`, `parent_id` (None for the root prompt), `role` ("prompter" or
"assistant"), `text`, `lang`, `rank` (0 = best among its siblings, None when unranked),
`review_result` (True accepted, False rejected, None not yet reviewed), `review_count`,
`deleted` and `message_tree_id`, among others.

`build_conversations` turns such rows into conversations:
- a message is usable only when it is not deleted and its review passed (`review_result` is
  True); with a `language`, it must also be in that language. An unusable message removes its
  whole subtree (a conversation never skips a turn);
- every path starts at a root prompt. At an assistant turn only the best-ranked usable reply is
  kept (lowest rank; unranked replies after ranked ones; then more reviews; then message id);
  at a prompter turn every usable follow-up starts its own path, so one tree gives one
  conversation per follow-up branch;
- a path ends at its last assistant reply (a trailing prompt without an answer is dropped), and
  only maximal paths are kept, so no conversation is a prefix of another.

Rows may instead each hold one whole conversation, as `messages` (TRL's conversational format):
a list of {"role": "system" | "user" | "assistant", "content"}, an optional system message first,
then user and assistant turns alternating, ending on an assistant reply.

Sources, by a chat recipe's `dataset` field:
- `starter`: the offline starter trees written by `write_starter_oasst` (this module) into the
  tunelab cache;
- a local folder with `<split>.jsonl` files of OASST1 rows or of conversations;
- one .jsonl file of either kind: a tenth of its conversations (whole trees), drawn with a fixed
  seed, is held out for evaluation;
- a Hugging Face Hub dataset id with OASST1's schema (`OpenAssistant/oasst1`) or a `messages` column.
"""

from __future__ import annotations

import os
import random
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from tunelab.console import say
from tunelab.errors import TunelabError
from tunelab.resources import cache_root
from tunelab.rundir import read_jsonl, write_jsonl

OASST_ROLES = {"prompter": "user", "assistant": "assistant"}
REQUIRED_COLUMNS = ("message_id", "parent_id", "role", "text")
CONVERSATION_ROLES = ("system", "user", "assistant")
HELD_OUT_FRACTION = 0.1  # of a single file's conversations (whole trees), for evaluation
HELD_OUT_SEED = 0
STARTER_SPLITS = {"train": 0, "validation": 1}
STARTER_SEED = 1234
STARTER_TREES = {"train": 180, "validation": 45}


# ---------------------------------------------------------------------------- tree building

def is_usable(message: dict, language: str | None) -> bool:
    """Not deleted, accepted by review, and (when a language is asked for) in that language."""
    if message.get("deleted"):
        return False
    if message.get("review_result") is not True:
        return False
    return language is None or message.get("lang") == language


def reply_order(message: dict) -> tuple:
    """Sort key of sibling replies: best rank first, unranked last, then more reviews, then id."""
    rank = message.get("rank")
    return (rank is None, rank if rank is not None else 0, -(message.get("review_count") or 0),
            str(message["message_id"]))


def build_conversations(messages: Iterable[dict], language: str | None = "en",
                        source: str = "the message rows") -> list[dict]:
    """Conversations from OASST1 message rows, in the order their root prompts appear.

    Each conversation is {"tree_id", "messages": [{"role": "user"|"assistant", "content"}],
    "message_ids"}; roles alternate, starting with the user and ending with the assistant. A row with
    an unknown role, no text, or the role of its parent is refused, naming `source` and the row.
    """
    rows = list(messages)
    children: dict[str, list[dict]] = defaultdict(list)
    roots = []
    for number, row in enumerate(rows, start=1):
        check_message(row, f"{source}: row {number}")
        if row["parent_id"] is None:
            roots.append(row)
        else:
            children[row["parent_id"]].append(row)
    check_role_order(rows, children, source)
    conversations = []
    for root in roots:
        if not is_usable(root, language):
            continue
        for path in conversation_paths(root, children, language):
            conversations.append({
                "tree_id": root.get("message_tree_id") or root["message_id"],
                "messages": [{"role": OASST_ROLES[m["role"]], "content": m["text"].strip()} for m in path],
                "message_ids": [m["message_id"] for m in path],
            })
    return conversations


def check_message(row: dict, where: str) -> None:
    missing = [column for column in REQUIRED_COLUMNS if column not in row]
    if missing:
        raise TunelabError(f"{where}: message rows need the OASST1 columns {', '.join(REQUIRED_COLUMNS)}; "
                           f"this row lacks {', '.join(missing)}: check the dataset, or give every row a "
                           "conversation as messages")
    if row["role"] not in OASST_ROLES:
        raise TunelabError(f"{where}: unknown role {row['role']!r}: use {' or '.join(OASST_ROLES)}")
    if not isinstance(row["text"], str) or not row["text"].strip():
        raise TunelabError(f"{where}: message {row['message_id']} has no text: fill it in or remove the row")


def check_role_order(rows: list[dict], children: dict[str, list[dict]], source: str) -> None:
    """Roots are prompts and replies alternate with their parent's role."""
    numbers = {id(row): number for number, row in enumerate(rows, start=1)}
    for row in rows:
        wrong = ([row] if row["parent_id"] is None and row["role"] != "prompter" else
                 [child for child in children.get(row["message_id"], []) if child["role"] == row["role"]])
        if wrong:
            expected = "prompter" if wrong[0]["role"] == "assistant" else "assistant"
            raise TunelabError(f"{source}: row {numbers[id(wrong[0])]}: message {wrong[0]['message_id']} has role "
                               f"{wrong[0]['role']!r} where {expected!r} belongs: a tree starts with a prompt and "
                               "replies alternate")


def conversation_paths(root: dict, children: dict[str, list[dict]], language: str | None) -> list[list[dict]]:
    """Each path from `root` that ends on an assistant reply: the best reply to each prompt, every follow-up of
    each reply. Walked with a stack, not recursion: a tree may be deeper than Python's recursion limit."""
    def replies(message: dict) -> list[dict]:
        return [child for child in children.get(message["message_id"], []) if is_usable(child, language)]

    paths, stack = [], [(root, None)]
    while stack:
        message, before = stack.pop()
        chain = (message, before)
        if message["role"] == "prompter":
            answers = replies(message)
            stack.extend([(min(answers, key=reply_order), chain)] if answers else [])
            continue
        follow_ups = [prompt for prompt in replies(message) if replies(prompt)]  # each one leads to a path
        if not follow_ups:
            paths.append(unwind(chain))
        stack.extend((prompt, chain) for prompt in reversed(follow_ups))
    return paths


def unwind(chain: tuple | None) -> list[dict]:
    """The messages of a linked chain (message, the chain before it), first message first."""
    messages = []
    while chain is not None:
        message, chain = chain
        messages.append(message)
    return messages[::-1]


# ---------------------------------------------------------------------------- conversations as rows

def conversations_from_rows(rows: list[dict], language: str | None, source: str) -> list[dict]:
    """Conversations from rows of OASST1 messages, or from rows that each hold one conversation as `messages`
    (`language` filters OASST1 rows only: conversation rows carry no language)."""
    if not (rows and "messages" in rows[0]):
        return build_conversations(rows, language, source)
    return [{"tree_id": str(number), "messages": checked_messages(row.get("messages"), f"{source}: row {number}")}
            for number, row in enumerate(rows, start=1)]


def checked_messages(messages, where: str) -> list[dict]:
    """A conversation's messages with stripped content, or a one-line error naming the row and the fix."""
    if not isinstance(messages, list) or not messages or not all(isinstance(turn, dict) for turn in messages):
        raise TunelabError(f"{where}: messages must be a list of {{\"role\", \"content\"}} turns: fix or remove the row")
    for turn in messages:
        if turn.get("role") not in CONVERSATION_ROLES:
            raise TunelabError(f"{where}: a turn has role {turn.get('role')!r}: give each turn a role, one of "
                               f"{', '.join(CONVERSATION_ROLES)}")
        if not isinstance(turn.get("content"), str) or not turn["content"].strip():
            raise TunelabError(f"{where}: a {turn['role']} turn has no content: fill it in or remove the row")
    roles = [turn["role"] for turn in messages]
    dialogue = roles[1:] if roles[0] == "system" else roles
    if not dialogue or dialogue != ["user", "assistant"] * (len(dialogue) // 2):
        raise TunelabError(f"{where}: turns go {' -> '.join(roles)}: after an optional system message, user and "
                           "assistant turns alternate, starting with the user and ending with the assistant")
    return [{"role": turn["role"], "content": turn["content"].strip()} for turn in messages]


# ---------------------------------------------------------------------------- loading

def load_chat_splits(dataset: str, splits: tuple[str, str], language: str | None,
                     sizes: tuple[int | None, int | None] = (None, None)) -> tuple[list[dict], list[dict]]:
    """(training, held-out) conversations: the two named splits of a dataset, or the two parts of one .jsonl
    file (`held_out`); each cut to its size."""
    path = Path(dataset).expanduser()
    if dataset != "starter" and path.is_file():
        if path.suffix != ".jsonl":
            raise TunelabError(f"{path}: chat data is read from JSON lines: give a .jsonl file (one conversation, or "
                               "one OASST1 message, a line) or a folder of <split>.jsonl files")
        parts = held_out(conversations_from_rows(read_jsonl(path), language, str(path)), str(path))
    else:
        parts = tuple(load_chat_split(dataset, split, language) for split in splits)
    return tuple(part[:size] for part, size in zip(parts, sizes, strict=True))


def held_out(conversations: list[dict], source: str) -> tuple[list[dict], list[dict]]:
    """(training, held-out): HELD_OUT_FRACTION of the trees, drawn with a fixed seed, and all their
    conversations held out, so no held-out conversation shares a turn with a training one."""
    trees = list(dict.fromkeys(c["tree_id"] for c in conversations))
    if len(trees) < 2:
        raise TunelabError(f"{source} has {len(trees)} conversation tree(s): a single file needs at least 2, one "
                           "to hold out for evaluation")
    count = max(1, round(HELD_OUT_FRACTION * len(trees)))
    chosen = set(random.Random(HELD_OUT_SEED).sample(trees, count))
    held = [c for c in conversations if c["tree_id"] in chosen]
    say(f"{source}: {len(held)} of its {len(conversations)} conversations held out for evaluation (a tenth, drawn "
        "with a fixed seed; OASST1 trees are held out whole)")
    return [c for c in conversations if c["tree_id"] not in chosen], held


def load_chat_split(dataset: str, split: str, language: str | None, size: int | None = None) -> list[dict]:
    """Conversations of one split of a dataset (OASST1 message trees or conversation rows); at most `size`."""
    source, rows = _read_message_rows(dataset, split)
    conversations = conversations_from_rows(rows, language, source)
    if not conversations:
        where = f" in language {language!r}" if language else ""
        raise TunelabError(f"no conversations{where} in {dataset}:{split}: check the dataset and --language "
                           "(none for every language)")
    return conversations[:size]


def _read_message_rows(dataset: str, split: str) -> tuple[str, list[dict]]:
    """(where the rows come from, the rows) for one split."""
    if dataset == "starter":
        return dataset, read_jsonl(starter_oasst_dir() / f"{split}.jsonl")
    path = Path(dataset).expanduser()
    if path.is_dir():
        candidate = path / f"{split}.jsonl"
        if not os.path.lexists(candidate):  # a link that loops is the reader's to name
            found = ", ".join(sorted(p.name for p in path.glob("*.jsonl"))) or "no .jsonl files"
            raise TunelabError(f"{path} has no {split}.jsonl (found: {found}): name the file {split}.jsonl "
                               "or set the recipe's split names")
        return str(candidate), read_jsonl(candidate)
    if dataset.startswith((".", "/", "~")) or path.suffix == ".jsonl":
        raise TunelabError(f"dataset path {dataset} does not exist: check the --dataset path")
    return f"{dataset}:{split}", _load_from_hub(dataset, split)


def _load_from_hub(dataset: str, split: str) -> list[dict]:
    from datasets import load_dataset

    try:
        data = load_dataset(dataset, split=split)
    except ValueError as error:
        if "split" in str(error).lower():
            raise TunelabError(f"dataset {dataset} has no split {split!r}: set the recipe's split names") from None
        raise TunelabError(f"cannot load dataset {dataset}: {str(error).splitlines()[0]}") from None
    except (OSError, ConnectionError) as error:
        raise TunelabError(f"cannot load dataset {dataset} from the Hugging Face Hub ({str(error).splitlines()[0]}): "
                           "use --dataset starter offline, or a local .jsonl file or folder of .jsonl files") from None
    if "messages" in data.column_names:
        return data.select_columns(["messages"]).to_list()
    columns = [c for c in ("message_id", "parent_id", "message_tree_id", "role", "text", "lang", "rank",
                           "review_result", "review_count", "deleted") if c in data.column_names]
    return data.select_columns(columns).to_list()


def starter_oasst_dir() -> Path:
    """The offline starter trees, written once into the tunelab cache."""
    folder = cache_root() / "data" / "starter_oasst"
    if not all((folder / f"{split}.jsonl").exists() for split in STARTER_SPLITS):
        write_starter_oasst(folder)
    return folder


# ---------------------------------------------------------------------------- the starter trees
#
# Everything below is written by this project (no text comes from OASST1 or another corpus).
# Each tree asks a small factual question in one of a few domains; the best-ranked answer is
# polite and complete, a lower-ranked sibling is terse or hedging, some replies are deleted or
# unreviewed, and some trees branch into follow-up questions. About one tree in nine is in
# German, Spanish or French, so the language filter has something to drop. Items (countries,
# word pairs, animals, numbers) are split between train and validation, so held-out
# conversations ask about things the training set never mentions.

CAPITALS = [
    ("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Canada", "Ottawa"),
    ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Norway", "Oslo"), ("Greece", "Athens"),
    ("Portugal", "Lisbon"), ("Poland", "Warsaw"), ("Ireland", "Dublin"), ("Austria", "Vienna"),
    ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Hungary", "Budapest"),
    ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("Chile", "Santiago"), ("Argentina", "Buenos Aires"),
    ("Mexico", "Mexico City"), ("Cuba", "Havana"), ("Iran", "Tehran"), ("Iraq", "Baghdad"),
    ("Ghana", "Accra"), ("Morocco", "Rabat"), ("Nepal", "Kathmandu"), ("Germany", "Berlin"),
    ("Russia", "Moscow"), ("China", "Beijing"), ("India", "New Delhi"), ("Australia", "Canberra"),
    ("Brazil", "Brasilia"), ("Turkey", "Ankara"), ("Belgium", "Brussels"), ("Colombia", "Bogota"),
    ("Ethiopia", "Addis Ababa"), ("Iceland", "Reykjavik"),
]
OPPOSITES = [
    ("hot", "cold"), ("early", "late"), ("happy", "sad"), ("tall", "short"), ("fast", "slow"),
    ("heavy", "light"), ("open", "closed"), ("empty", "full"), ("rich", "poor"), ("loud", "quiet"),
    ("strong", "weak"), ("wet", "dry"), ("young", "old"), ("cheap", "expensive"), ("hard", "soft"),
    ("clean", "dirty"), ("bright", "dark"), ("easy", "difficult"), ("thick", "thin"), ("wide", "narrow"),
    ("brave", "cowardly"), ("rough", "smooth"), ("sharp", "blunt"), ("deep", "shallow"), ("friend", "enemy"),
    ("arrive", "leave"), ("win", "lose"), ("buy", "sell"), ("push", "pull"), ("begin", "end"),
]
ANIMALS = [
    ("cat", "kitten", "meows"), ("dog", "puppy", "barks"), ("cow", "calf", "moos"), ("sheep", "lamb", "bleats"),
    ("horse", "foal", "neighs"), ("pig", "piglet", "oinks"), ("duck", "duckling", "quacks"),
    ("goat", "kid", "bleats"), ("lion", "cub", "roars"), ("frog", "tadpole", "croaks"),
    ("owl", "owlet", "hoots"), ("bear", "cub", "growls"), ("goose", "gosling", "honks"),
    ("kangaroo", "joey", "grunts"), ("swan", "cygnet", "trumpets"),
]
UNITS = [
    ("meters", "centimeters", 100), ("kilometers", "meters", 1000), ("hours", "minutes", 60),
    ("minutes", "seconds", 60), ("kilograms", "grams", 1000), ("days", "hours", 24),
    ("weeks", "days", 7), ("liters", "milliliters", 1000), ("feet", "inches", 12), ("years", "months", 12),
]
THANKS = ["Thank you!", "Thanks, that helps.", "Great, thanks a lot!", "Perfect, thank you."]
WELCOME = "You're welcome! Feel free to ask if you have any other questions."
FOREIGN = {
    "de": ("Was ist die Hauptstadt von {country}?", "Die Hauptstadt von {country} ist {capital}.",
           "Was ist {a} plus {b}?", "{a} plus {b} ist {total}."),
    "es": ("¿Cuál es la capital de {country}?", "La capital de {country} es {capital}.",
           "¿Cuánto es {a} más {b}?", "{a} más {b} es {total}."),
    "fr": ("Quelle est la capitale de {country} ?", "La capitale de {country} est {capital}.",
           "Combien font {a} plus {b} ?", "{a} plus {b} font {total}."),
}


def _topic_turns(topic: str, item, rng: random.Random) -> tuple[str, str, str]:
    """(question, best answer, weaker answer) about one item of a domain."""
    if topic == "capital":
        country, capital = item
        question = rng.choice([f"What is the capital of {country}?", f"Which city is the capital of {country}?",
                               f"Can you tell me the capital of {country}?"])
        return question, f"The capital of {country} is {capital}.", f"I think it is {capital}, but I am not sure."
    if topic == "opposite":
        word, opposite = item
        question = rng.choice([f'What is the opposite of "{word}"?', f'What is an antonym of "{word}"?',
                               f'Which word means the opposite of "{word}"?'])
        return question, f'The opposite of "{word}" is "{opposite}".', f"{opposite}"
    if topic == "baby":
        animal, baby, _ = item
        question = rng.choice([f"What do you call a baby {animal}?", f"What is a young {animal} called?"])
        return question, f"A baby {animal} is called {_a(baby)}.", f"It's {_a(baby)}, I guess."
    if topic == "sound":
        animal, _, sound = item
        question = rng.choice([f"What sound does {_a(animal)} make?", f"How does {_a(animal)} sound?"])
        return question, f"{_a(animal).capitalize()} {sound}.", f"{sound.capitalize()}."
    if topic == "unit":
        (big, small, factor), amount = item
        question = rng.choice([f"How many {small} are in {amount} {big}?", f"Convert {amount} {big} to {small}.",
                               f"What is {amount} {big} in {small}?"])
        return (question, f"There are {factor} {small} in one of the {big}, so {amount} {big} is "
                          f"{amount * factor} {small}.", f"{amount * factor}")
    a, b = item
    question = rng.choice([f"What is {a} plus {b}?", f"Can you add {a} and {b}?", f"How much is {a} + {b}?"])
    return question, f"{a} plus {b} equals {a + b}.", f"Maybe {a + b + rng.choice([-1, 1])}?"


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _follow_up(topic: str, item) -> str:
    """A follow-up question about a second item of the same domain, phrased as a follow-up."""
    if topic == "capital":
        return f"And what about {item[0]}?"
    if topic == "opposite":
        return f'What about "{item[0]}"?'
    if topic in ("baby", "sound"):
        return f"And {_a(item[0])}?"
    if topic == "unit":
        (big, small, _), amount = item
        return f"And {amount} {big}?"
    return f"And {item[0]} plus {item[1]}?"


class _TreeWriter:
    """Collects the messages of one split, handing out ids and dates."""

    def __init__(self, split: str, rng: random.Random):
        self.split, self.rng, self.rows, self.count = split, rng, [], 0

    def add(self, tree_id: str, parent: str | None, role: str, text: str, lang: str = "en", rank: int | None = None,
            deleted: bool = False, review_result: bool | None = True) -> str:
        self.count += 1
        message_id = f"starter-{self.split}-{self.count:05d}"
        self.rows.append({
            "message_id": message_id, "parent_id": parent, "user_id": f"starter-user-{self.rng.randrange(40):02d}",
            "created_date": f"2024-01-{1 + self.count % 28:02d}T{self.count % 24:02d}:00:00+00:00",
            "text": text, "role": role, "lang": lang,
            "review_count": 0 if review_result is None else 3, "review_result": review_result,
            "deleted": deleted, "rank": rank, "synthetic": True, "model_name": None, "detoxify": None,
            "message_tree_id": tree_id, "tree_state": "ready_for_export", "emojis": None, "labels": None,
        })
        return message_id


def _items_by_topic(split_index: int, rng: random.Random) -> dict[str, list]:
    """Each domain's items for one split: every fifth item (offset by split) is held out for validation."""
    def part(items):
        return [item for i, item in enumerate(items) if (i % 5 == 4) == (split_index == 1)]

    numbers = [(a, b) for a in range(2, 60, 3) for b in range(3, 40, 4)]
    rng_numbers = random.Random(STARTER_SEED)  # the same shuffle for both splits, so they partition the pairs
    rng_numbers.shuffle(numbers)
    amounts = [(unit, amount) for unit in UNITS for amount in range(2, 13)]
    rng_numbers.shuffle(amounts)
    return {"capital": part(CAPITALS), "opposite": part(OPPOSITES), "baby": part(ANIMALS), "sound": part(ANIMALS),
            "unit": part(amounts), "sum": part(numbers)}


def starter_trees(split: str) -> list[dict]:
    """The starter message rows of one split ("train" or "validation"), in OASST1's schema."""
    if split not in STARTER_SPLITS:
        raise TunelabError(f"the starter set has splits {', '.join(STARTER_SPLITS)}, not {split!r}")
    rng = random.Random(STARTER_SEED + STARTER_SPLITS[split])
    items = _items_by_topic(STARTER_SPLITS[split], rng)
    writer = _TreeWriter(split, rng)
    topics = list(items)
    for number in range(STARTER_TREES[split]):
        tree_id = f"starter-{split}-tree-{number:04d}"
        if number % 9 == 8:
            _foreign_tree(writer, tree_id, rng, items)
            continue
        topic = topics[number % len(topics)]
        item, second = rng.sample(items[topic], 2)
        question, best, weak = _topic_turns(topic, item, rng)
        root = writer.add(tree_id, None, "prompter", question)
        shape = number % 4
        reply = writer.add(tree_id, root, "assistant", best, rank=0)
        writer.add(tree_id, root, "assistant", weak, rank=1)
        if shape == 1:
            writer.add(tree_id, root, "assistant", "Buy cheap watches at my site!!!", rank=None, deleted=True)
        if shape == 2:
            writer.add(tree_id, root, "assistant", weak.upper(), rank=None, review_result=None)
        if shape in (0, 3):
            follow = writer.add(tree_id, reply, "prompter", _follow_up(topic, second))
            _, second_best, second_weak = _topic_turns(topic, second, rng)
            writer.add(tree_id, follow, "assistant", second_weak, rank=1)
            second_reply = writer.add(tree_id, follow, "assistant", second_best, rank=0)
            if shape == 3:
                thanks = writer.add(tree_id, second_reply, "prompter", rng.choice(THANKS))
                writer.add(tree_id, thanks, "assistant", WELCOME, rank=0)
        if shape == 0:
            other = writer.add(tree_id, reply, "prompter", rng.choice(THANKS))
            writer.add(tree_id, other, "assistant", WELCOME)
            writer.add(tree_id, reply, "prompter", "This message was removed.", deleted=True)
    return writer.rows


def _foreign_tree(writer: _TreeWriter, tree_id: str, rng: random.Random, items: dict[str, list]) -> None:
    lang = rng.choice(sorted(FOREIGN))
    ask_capital, tell_capital, ask_sum, tell_sum = FOREIGN[lang]
    country, capital = rng.choice(items["capital"])
    a, b = rng.choice(items["sum"])
    root = writer.add(tree_id, None, "prompter", ask_capital.format(country=country), lang=lang)
    reply = writer.add(tree_id, root, "assistant", tell_capital.format(country=country, capital=capital),
                       lang=lang, rank=0)
    follow = writer.add(tree_id, reply, "prompter", ask_sum.format(a=a, b=b), lang=lang)
    writer.add(tree_id, follow, "assistant", tell_sum.format(a=a, b=b, total=a + b), lang=lang, rank=0)


def write_starter_oasst(folder: Path) -> Path:
    """Write train.jsonl and validation.jsonl of starter message rows into `folder` (atomically per file)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split in STARTER_SPLITS:
        write_jsonl(folder / f"{split}.jsonl", starter_trees(split))
    return folder


STARTER_PROMPTS = [
    "What is the capital of Sweden?",
    'What is the opposite of "loud"?',
    "What do you call a baby swan?",
    "How many minutes are in 7 hours?",
    "What is 23 plus 19?",
]
