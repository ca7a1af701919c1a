"""A seeded, synthetic English corpus for the embedded "tiny" model.

A small template grammar (a few hundred words) writes four kinds of documents, one for each
task family textgym ships:

* reviews of films, products and restaurants, with positive, negative and neutral wording; like
  web text, some are flawed (rude, repetitive or cut off);
* short scene descriptions that name everyday objects and actions (mostly after a word list),
  with the verb inflected or, after "wants to" and the like, as the word list writes it;
* short passages followed by a summary that is vague, says who did what where, or also says when;
* arithmetic statements such as ``17 + 25 = 42``, from the train split of ``textgym/Arithmetic-v0``
  only, and single-digit facts.

The flaws and the vague summaries are deliberate: the model they train does each task well only
part of the time, which is the headroom that RL on real language models has, too.

Everything is generated from a seed, so the corpus (and the prompts derived from it) need no
download and no redistribution licence.

Example:
    >>> from textgym.models.corpus import generate_documents
    >>> docs = generate_documents(3, seed=0)
    >>> len(docs), all(isinstance(d, str) for d in docs)
    (3, True)
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterator
from dataclasses import dataclass

# --- reviews ------------------------------------------------------------------------------------

REVIEW_KINDS: dict[str, dict[str, list[str]]] = {
    "Film": {
        "things": ["film", "movie", "drama", "comedy", "thriller", "cartoon", "documentary",
                   "western", "musical", "horror film", "romance", "sequel", "mystery"],
        "openers": [
            "I watched this {thing} {when}.",
            "We saw this {thing} at the cinema {when}.",
            "My friend and I watched this {thing} {when}.",
            "I finally saw the new {thing} {when}.",
        ],
        "aspects": [
            "the story", "the acting", "the music", "the ending", "the plot", "the dialogue",
            "the cast", "the camera work", "the lead actor", "the script", "the first hour",
            "the soundtrack", "the villain", "the costumes", "the scenery", "the director",
        ],
    },
    "Product": {
        "things": [
            "blender", "phone", "lamp", "backpack", "kettle", "chair", "watch", "camera",
            "jacket", "laptop", "toaster", "speaker", "pair of shoes", "mattress", "drill", "vacuum",
            "printer", "keyboard", "microwave", "suitcase", "tent", "bicycle", "helmet", "sofa",
            "fridge", "monitor", "charger", "umbrella", "wallet",
        ],
        "openers": [
            "I bought this {thing} {when}.",
            "I have used this {thing} every day since {when_past}.",
            "My sister gave me this {thing} {when}.",
            "I ordered this {thing} online {when}.",
        ],
        "aspects": [
            "the battery", "the design", "the price", "the build quality", "the color",
            "the box", "the handle", "the size", "the sound", "the delivery", "the manual",
            "the weight", "the fabric", "the zipper", "the screen", "the cable", "the warranty",
        ],
    },
    "Restaurant": {
        "things": ["restaurant", "cafe", "diner", "bistro", "pizza place", "noodle bar", "bakery",
                   "steakhouse", "taco stand", "sushi bar", "tea room", "burger joint", "canteen"],
        "openers": [
            "We had dinner at this {thing} {when}.",
            "I had lunch at this {thing} {when}.",
            "My family visited this {thing} {when}.",
            "I tried the little {thing} on the corner {when}.",
        ],
        "aspects": [
            "the food", "the service", "the staff", "the soup", "the pasta", "the dessert",
            "the coffee", "the menu", "the bread", "the waiter", "the portions", "the salad",
            "the curry", "the noodles", "the pancakes", "the burger", "the wine", "the lemonade",
        ],
    },
}

WHEN = ["last night", "last week", "on Friday", "on Sunday", "yesterday", "this morning",
        "last month", "on my birthday", "after work", "on the weekend"]
WHEN_PAST = ["last week", "last month", "the spring", "my birthday", "the summer", "January"]

# Adjectives per polarity. The neutral ones score exactly 0 with VADER, so "neutral" is neutral.
ADJECTIVES = {
    "positive": ["great", "wonderful", "excellent", "amazing", "lovely", "fantastic", "superb",
                 "delightful", "charming", "brilliant", "good", "pleasant", "beautiful", "perfect",
                 "nice", "fun", "outstanding", "gorgeous", "impressive", "marvelous", "elegant",
                 "cheerful", "magnificent", "sweet", "clever", "generous"],
    "negative": ["terrible", "awful", "boring", "bad", "poor", "disappointing", "horrible",
                 "bland", "dull", "rude", "weak", "ugly", "annoying", "sad", "stupid", "worse",
                 "awkward", "noisy", "painful", "useless", "pathetic", "nasty", "confusing"],
    "neutral": ["average", "ordinary", "standard", "typical", "simple", "plain", "normal",
                "usual", "predictable", "quiet", "small", "large", "long", "short", "beige", "modern",
                "brief", "medium", "regular", "common", "basic", "rectangular"],
}
CLOSERS = {
    "positive": ["I would recommend it to everyone.", "I will come back soon.",
                 "Highly recommended.", "I loved every minute of it.", "Five stars from me.",
                 "It made me very happy."],
    "negative": ["I would not recommend it.", "Avoid it at all costs.", "I will never go back.",
                 "What a waste of time.", "One star from me.", "It made me very angry."],
    "neutral": ["It was about what I expected.", "Three stars from me.",
                "I might try it again some day.", "It was a normal experience.",
                "Nothing more to say about it.", "That is all."],
}
INTENSIFIERS = ["", "", "really ", "very ", "quite ", "truly "]


def review_opening(rng: random.Random, kind: str) -> str:
    """The neutral first part of a review, e.g. ``"Film review: I watched this movie last night."``"""
    spec = REVIEW_KINDS[kind]
    opener = rng.choice(spec["openers"]).format(
        thing=rng.choice(spec["things"]), when=rng.choice(WHEN), when_past=rng.choice(WHEN_PAST)
    )
    return f"{kind} review: {opener}"


RUDE = ["Only an idiot would ask me that.", "Stop bothering me with this.", "Who cares, go away.",
        "That is a stupid question and you know it.", "Do your own homework."]
FLAWS = ("cut off", "rude", "repetitive")
FLAWED_SHARE = 0.58  # of corpus reviews; the Preference task's reward model prefers the rest


def flawed(rng: random.Random, body: str, flaw: str) -> str:
    """``body`` (a review's text after its opening, with a leading space) spoiled by ``flaw``."""
    if flaw == "cut off":
        words = body.split()
        return " " + " ".join(words[: rng.randint(2, max(2, len(words) // 2))])
    if flaw == "rude":
        return f" {rng.choice(RUDE)}{body}" if rng.random() < 0.5 else f"{body} {rng.choice(RUDE)}"
    if flaw == "repetitive":
        sentence = body.split(". ")[0].strip()
        return " " + " ".join([sentence.rstrip(".") + "."] * 3)
    raise ValueError(f"flaw must be one of {list(FLAWS)}, got {flaw!r}")


def review_body(rng: random.Random, kind: str, polarity: str, aspects: int) -> str:
    """A complete review body: ``aspects`` (1 or 2) sentences about the thing, then a closer."""
    first, second, third = rng.sample(REVIEW_KINDS[kind]["aspects"], 3)
    words = ADJECTIVES[polarity]
    sentences = [f"{first.capitalize()} was {rng.choice(INTENSIFIERS)}{rng.choice(words)}.",
                 f"{second.capitalize()} was {rng.choice(words)} and {third} was {rng.choice(words)}."]
    return " " + " ".join([*sentences[:aspects], rng.choice(CLOSERS[polarity])])


def review(rng: random.Random) -> str:
    kind = rng.choice(list(REVIEW_KINDS))
    # Weighted so the base model's positive share lands near 50% (flaws, rude ones above all, lower
    # it): room for RL to improve it.
    polarity = rng.choices(["positive", "negative", "neutral"], [0.55, 0.25, 0.2])[0]
    body = review_body(rng, kind, polarity, aspects=rng.choice([1, 2]))
    if rng.random() < FLAWED_SHARE:
        body = flawed(rng, body, rng.choice(FLAWS))
    return review_opening(rng, kind) + body


# --- scenes -------------------------------------------------------------------------------------

PEOPLE = ["the boy", "a girl", "the old man", "my mother", "a woman", "the chef", "the teacher",
          "my father", "a student", "the farmer", "the doctor", "a child", "my brother", "the baker",
          "the nurse", "the pilot", "a neighbor", "the gardener", "my grandmother", "a tourist",
          "the driver", "the singer", "a painter", "the waiter", "my uncle", "my aunt",
          "a young man", "an old woman", "the musician", "the mechanic", "the fisherman",
          "the librarian", "the coach", "the carpenter", "the dancer", "my cousin", "the twins",
          "the children", "my grandfather", "the postman", "the soldier", "a stranger",
          "my parents", "the students", "two friends", "the girls", "the boys"]
PLURAL = {"the twins", "the children", "my parents", "the students", "two friends", "the girls", "the boys"}
# Ways to say a person is about to act: they put the verb in its base form, as the Keywords header
# writes it, so the model sees that word copied as well as inflected ("catch" -> "catches").
# (singular form, plural form)
INTENTIONS = [("wants to", "want to"), ("tries to", "try to"), ("will", "will"), ("has to", "have to"),
              ("is going to", "are going to"), ("likes to", "like to")]
INTENTION_SHARE = 0.3  # of scenes
COLORS = ["red", "blue", "green", "yellow", "white", "black", "brown", "orange", "purple", "pink",
          "grey", "golden", "wooden", "heavy", "tiny", "huge", "shiny", "dirty", "empty", "soft"]
ADVERBS = ["slowly", "quickly", "carefully", "quietly", "happily", "gently", "proudly", "suddenly",
           "calmly", "eagerly", "loudly", "softly", "patiently", "firmly", "nervously", "silently",
           "easily", "barely", "finally", "already"]
# verb -> (third person, past, objects that make sense with it)
ACTIONS: dict[str, tuple[str, str, list[str]]] = {
    "open": ("opens", "opened", ["door", "window", "box", "bottle", "letter", "bag"]),
    "close": ("closes", "closed", ["door", "window", "book", "box", "gate"]),
    "wash": ("washes", "washed", ["dishes", "car", "shirt", "plate", "cup", "dog"]),
    "carry": ("carries", "carried", ["box", "bag", "basket", "chair", "ladder", "bucket"]),
    "throw": ("throws", "threw", ["ball", "stick", "frisbee", "stone"]),
    "read": ("reads", "read", ["book", "letter", "newspaper", "map", "menu"]),
    "cut": ("cuts", "cut", ["bread", "apple", "cake", "paper", "grass", "onion"]),
    "cook": ("cooks", "cooked", ["soup", "rice", "eggs", "dinner", "pasta"]),
    "paint": ("paints", "painted", ["wall", "fence", "picture", "door", "chair"]),
    "fix": ("fixes", "fixed", ["bike", "car", "lamp", "roof", "clock", "chair"]),
    "clean": ("cleans", "cleaned", ["table", "floor", "kitchen", "window", "room"]),
    "drink": ("drinks", "drank", ["water", "coffee", "tea", "milk", "juice"]),
    "eat": ("eats", "ate", ["apple", "sandwich", "bread", "cake", "soup", "banana"]),
    "write": ("writes", "wrote", ["letter", "note", "story", "list", "card"]),
    "ride": ("rides", "rode", ["bike", "horse", "bus", "train"]),
    "feed": ("feeds", "fed", ["dog", "cat", "birds", "horse", "fish"]),
    "plant": ("plants", "planted", ["tree", "flowers", "seeds", "garden"]),
    "kick": ("kicks", "kicked", ["ball", "door", "stone"]),
    "fill": ("fills", "filled", ["cup", "bucket", "bottle", "glass", "bag"]),
    "pick up": ("picks up", "picked up", ["ball", "phone", "pen", "bag", "cup", "key"]),
    "push": ("pushes", "pushed", ["cart", "stroller", "button", "wheelbarrow", "door"]),
    "pull": ("pulls", "pulled", ["rope", "wagon", "sled", "curtain", "drawer"]),
    "bake": ("bakes", "baked", ["bread", "cookies", "pie", "muffins", "cake"]),
    "buy": ("buys", "bought", ["ticket", "umbrella", "newspaper", "melon", "scarf"]),
    "hang": ("hangs", "hung", ["coat", "painting", "towel", "mirror", "lantern"]),
    "fold": ("folds", "folded", ["towel", "blanket", "napkin", "shirt", "map"]),
    "sweep": ("sweeps", "swept", ["floor", "porch", "leaves", "stairs"]),
    "climb": ("climbs", "climbed", ["ladder", "tree", "hill", "stairs", "fence"]),
    "build": ("builds", "built", ["sandcastle", "fence", "shelf", "birdhouse", "snowman"]),
    "catch": ("catches", "caught", ["ball", "bus", "fish", "butterfly", "frisbee"]),
    "pour": ("pours", "poured", ["milk", "tea", "juice", "water", "sauce"]),
    "lift": ("lifts", "lifted", ["suitcase", "box", "baby", "barrel", "table"]),
    "wrap": ("wraps", "wrapped", ["gift", "present", "sandwich", "scarf", "package"]),
    "chase": ("chases", "chased", ["cat", "dog", "pigeon", "squirrel", "chicken"]),
    "drive": ("drives", "drove", ["truck", "tractor", "van", "taxi", "car"]),
    "draw": ("draws", "drew", ["map", "horse", "house", "circle", "portrait"]),
    "peel": ("peels", "peeled", ["orange", "potato", "carrot", "banana", "onion"]),
    "stir": ("stirs", "stirred", ["soup", "porridge", "paint", "coffee", "sauce"]),
    "water": ("waters", "watered", ["plants", "flowers", "lawn", "tomatoes", "roses"]),
    "play": ("plays", "played", ["guitar", "piano", "violin", "drum", "flute"]),
}
PLACES = ["in the kitchen", "at the park", "on the street", "in the garden", "near the river",
          "at the table", "in the office", "on the beach", "in the yard", "at school",
          "in the living room", "at the station", "on the farm", "in the shop", "in the forest",
          "on the bridge", "at the harbor", "in the barn", "on the balcony", "in the hallway",
          "at the airport", "near the lake", "in the classroom", "at the market", "on the roof",
          "in the garage", "at the zoo", "on the mountain", "in the cellar", "at the museum",
          "in the village", "near the fountain", "at the hospital", "in the basement"]
AFTERWARDS = ["Then {they} {smile}.", "After that {they} {sit} down.", "The sun is shining.",
              "It is a quiet afternoon.", "A dog barks nearby.", "Then {they} {go} home.",
              "The room is warm and bright.", "It starts to rain.", "Birds sing in the trees.",
              "A clock ticks on the wall.", "The wind blows through the leaves.",
              "Somebody whistles a tune.", "The snow falls softly.", "A baby laughs nearby.",
              "Thunder rumbles far away.", "The kettle whistles in the corner.",
              "Then {they} {wave} goodbye.", "Then {they} {yawn}."]


def _pronoun(person: str) -> str:
    if person in PLURAL:
        return "they"
    if any(w in person for w in ["girl", "woman", "mother"]):
        return "she"
    if any(w in person for w in ["boy", "man", "father", "brother"]):
        return "he"
    return "they"


def scene(rng: random.Random) -> str:
    person = rng.choice(PEOPLE)
    verb = rng.choice(list(ACTIONS))
    third, _, objects = ACTIONS[verb]
    plural = person in PLURAL
    if rng.random() < INTENTION_SHARE:
        acts = f"{rng.choice(INTENTIONS)[plural]} {verb}"
    else:
        acts = verb if plural else third
    obj, place = rng.choice(objects), rng.choice(PLACES)
    they = _pronoun(person)
    singular = they != "they"
    after = rng.choice(AFTERWARDS).format(
        they=they,
        smile="smiles" if singular else "smile",
        sit="sits" if singular else "sit",
        go="goes" if singular else "go",
        wave="waves" if singular else "wave",
        yawn="yawns" if singular else "yawn",
    )
    color = f"{rng.choice(COLORS)} " if rng.random() < 0.4 else ""
    adverb = f" {rng.choice(ADVERBS)}" if rng.random() < 0.3 else ""
    text = f"Scene: {person.capitalize()}{adverb} {acts} the {color}{obj} {place}. {after}"
    if rng.random() < 0.9:  # CommonGen-style header: the concepts the scene must use.
        concepts = [obj, verb, place.split()[-1]]
        rng.shuffle(concepts)
        text = f"Words: {', '.join(concepts)}. {text}"
    return text


# --- passages with summaries ------------------------------------------------------------------

NAMES = ["Tom", "Anna", "Sam", "Maria", "Ben", "Lucy", "Omar", "Nina", "Jack", "Emma", "Leo",
         "Sara", "Max", "Julia", "Paul", "Mia", "David", "Laura", "Hugo", "Chloe", "Ivan", "Grace",
         "Felix", "Rosa", "Noah", "Alice", "Victor", "Elena", "Oscar", "Hannah", "Pedro", "Zoe",
         "Kevin", "Olivia", "Amir", "Ruby", "Diego", "Clara", "Simon", "Isabel", "Yusuf", "Vera"]
CITIES = ["Paris", "Rome", "Berlin", "Madrid", "Lisbon", "Dublin", "Oslo", "Vienna", "Prague",
          "Athens", "Cairo", "Tokyo", "Lima", "Boston", "Chicago", "Denver", "Sydney", "Toronto",
          "Seattle", "Austin", "London", "Warsaw", "Helsinki", "Nairobi", "Mumbai", "Seoul"]
DAYS = ["on Monday", "on Tuesday", "on Wednesday", "on Thursday", "on Saturday", "in the morning",
        "in the evening", "after lunch", "before breakfast", "on a rainy day", "in December",
        "in April", "in July", "in October", "at noon", "at midnight"]
ERRANDS = [  # (where they went, what they did there)
    ("market", "bought apples and bread"), ("library", "borrowed two books"),
    ("garden", "planted new flowers"), ("station", "took the train to the city"),
    ("shop", "bought a new jacket"), ("beach", "found a small shell"),
    ("park", "played football with friends"), ("office", "finished a long report"),
    ("farm", "fed the horses"), ("bakery", "bought a chocolate cake"),
    ("river", "caught a big fish"), ("school", "passed the math test"),
    ("museum", "saw an old dinosaur skeleton"), ("hospital", "visited a sick grandmother"),
    ("airport", "picked up a cousin"), ("post office", "sent a parcel to a friend"),
    ("bank", "opened a savings account"), ("zoo", "watched the elephants and giraffes"),
    ("stadium", "cheered for the local team"), ("theater", "watched a funny play"),
    ("pharmacy", "bought medicine for a cough"), ("harbor", "watched the ships arrive"),
    ("forest", "picked wild mushrooms and berries"), ("mountain", "climbed to the snowy peak"),
    ("concert", "heard a famous violinist"), ("gym", "lifted heavy weights"),
    ("hardware store", "bought nails and a hammer"), ("pool", "swam twenty laps"),
]
WEATHER = ["The weather was cold and windy.", "It was a warm and sunny day.",
           "The sky was grey and it rained a little.", "The air was fresh and clear.",
           "Heavy snow covered the roads.", "A thick fog hid the buildings.",
           "It was hot and humid all afternoon.", "A storm was coming from the west."]
DETAILS = ["There were many people there.", "Everything took longer than planned.",
           "A friend came along to help.", "The streets were very busy.",
           "It was quiet and calm there.", "The trip took about an hour."]
ENDINGS = ["{name} came home late in the evening.", "{name} was tired but happy.",
           "Later {name} called a friend to tell the news.", "{name} went to bed early."]


@dataclass(frozen=True)
class Passage:
    text: str  # "Passage: ... " up to, not including, " Summary:"
    name: str
    place: str
    summary: str  # who did what where
    full_summary: str  # who did what where (in which city) and when: the Summarize task's reference


def passage_parts(rng: random.Random) -> Passage:
    name, day = rng.choice(NAMES), rng.choice(DAYS)
    place, did = rng.choice(ERRANDS)
    middle = rng.sample([rng.choice(WEATHER), *rng.sample(DETAILS, 2)], rng.randint(1, 3))
    city = f" in {rng.choice(CITIES)}" if rng.random() < 0.5 else ""
    story = " ".join(
        [f"{name} went to the {place}{city} {day}.", *middle,
         f"At the {place}, {name} {did}.", rng.choice(ENDINGS).format(name=name)]
    )
    return Passage(f"Passage: {story}", name, place, f"{name} {did} at the {place}.",
                   f"{name} {did} at the {place}{city} {day}.")


VAGUE_SUMMARIES = ["{name} had a busy day.", "{name} went out.", "{name} went to the {place}.",
                   "A day in the life of {name}.", "{name} was out all day."]
# Shares of the corpus's summary styles: vague, who-what-where, and who-what-where-when. The
# Summarize task's references are the last style, so the base model writes them only sometimes.
SUMMARY_STYLES = {"vague": 0.5, "partial": 0.35, "full": 0.15}


def passage(rng: random.Random) -> str:
    parts = passage_parts(rng)
    style = rng.choices(list(SUMMARY_STYLES), list(SUMMARY_STYLES.values()))[0]
    if style == "vague":
        summary = rng.choice(VAGUE_SUMMARIES).format(name=parts.name, place=parts.place)
    else:
        summary = parts.full_summary if style == "full" else parts.summary
    return f"{parts.text} Summary: {summary}"


# --- arithmetic ---------------------------------------------------------------------------------

def seeded_split(items: list, split: str, seed: int, test_share: float = 0.2) -> list:
    """The ``split`` ("train" or "test") part of ``items`` after a seeded shuffle: test first, train the rest."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be one of ['train', 'test'], got {split!r}")
    items = list(items)
    random.Random(seed).shuffle(items)
    n_test = max(1, int(len(items) * test_share))
    return items[:n_test] if split == "test" else items[n_test:]


@functools.lru_cache(maxsize=None)
def arithmetic_problems(split: str) -> list[tuple[str, str]]:
    """``(problem, answer)`` for every ``a + b =`` and ``a - b =`` (a >= b) with a in 0..99 and b in
    0..9, cut 80/20 into disjoint train and test splits (``textgym/Arithmetic-v0``'s data).

    b has one digit because the 2M-parameter model cannot learn two-digit sums in a 30-minute CPU
    build; with one-digit b it learns them part of the way, which leaves RL a skill to sharpen.
    """
    problems = [(f"{a} + {b} =", str(a + b)) for a in range(100) for b in range(10)]
    problems += [(f"{a} - {b} =", str(a - b)) for a in range(100) for b in range(min(a, 9) + 1)]
    return seeded_split(problems, split, seed=14)


def arithmetic_problem(rng: random.Random) -> tuple[str, str]:
    """A train-split problem such as ``"17 + 25 ="`` and its answer: the corpus never shows a test problem."""
    return rng.choice(arithmetic_problems("train"))


def arithmetic(rng: random.Random) -> str:
    problem, answer = arithmetic_problem(rng)
    return f"{problem} {answer}"


# --- the corpus ---------------------------------------------------------------------------------

# Shares of documents (the dialogues in ``textgym.models.dialogues.DIALOGUES`` take the rest). Sums
# are short (about 11 tokens) and the hardest skill for a small model, so they are most of the
# documents and about a third of the tokens.
GENERATORS = [(review, 0.13), (scene, 0.10), (passage, 0.075), (arithmetic, 0.68)]


def iter_documents(seed: int) -> Iterator[str]:
    """An endless, seeded stream of documents (no EOS; the tokenizer step adds it); a dialogue is
    rendered with the chat template."""
    # Imported here because the dialogues are written from this module's grammar.
    from textgym.models.dialogues import DIALOGUES, render

    chats = [(lambda rng, make=make: render(make(rng)), share) for make, share in DIALOGUES]
    rng = random.Random(seed)
    makers, weights = zip(*GENERATORS, *chats)
    while True:
        yield rng.choices(makers, weights)[0](rng)


def generate_documents(n: int, seed: int = 0) -> list[str]:
    """The first ``n`` documents of the stream for ``seed``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    stream = iter_documents(seed)
    return [next(stream) for _ in range(n)]


def prompt_starts(n: int, seed: int = 0) -> list[str]:
    """``n`` open-ended prompts, evenly spread over the four document kinds.

    Each prompt is the part of a document a model should continue from: a review's neutral
    opening, a scene's word list, a passage up to "Summary:", or an unanswered sum.
    """
    rng = random.Random(seed)

    def review_prompt() -> str:
        return review_opening(rng, rng.choice(list(REVIEW_KINDS)))

    def scene_prompt() -> str:
        text = scene(rng)
        return text[: text.index("Scene:") + len("Scene:")] if text.startswith("Words") else "Scene:"

    def passage_prompt() -> str:
        text = passage(rng)
        return text[: text.index(" Summary:") + len(" Summary:")]

    def arithmetic_prompt() -> str:
        return arithmetic_problem(rng)[0]

    makers = [review_prompt, scene_prompt, passage_prompt, arithmetic_prompt]
    return [makers[i % len(makers)]() for i in range(n)]


def vocabulary_size(seed: int = 0, n_documents: int = 20_000) -> int:
    """How many distinct words the grammar uses (case-insensitive, numbers excluded)."""
    words = set()
    for doc in generate_documents(n_documents, seed):
        for token in doc.replace(".", " ").replace(",", " ").replace(":", " ").split():
            if token.isalpha():
                words.add(token.lower())
    return len(words)
