"""Built-in synthetic dialogue summarization data in DialogSum's format.

sumlab's offline default trains a tiny model for a couple of minutes, so this
data has to look like the real thing (#PersonN# speaker tags, masked PII,
small talk) and still be quick to learn. Each topic is a short scripted scene
whose lines are picked from a few paraphrases and filled with sampled slots
(day, time, item, ...); the summary is one fixed template over the slot values
the dialogue finally settles on. Distractors (a rejected day, a colour that is
out of stock) mean a model has to read the dialogue to get them right.
"""

from __future__ import annotations

import random
from collections.abc import Callable

SPECIAL_TOKENS: tuple[str, ...] = (
    "#Person1#",
    "#Person2#",
    "#Person3#",
    "#PhoneNumber#",
    "#Address#",
    "#Email#",
    "#DateOfBirth#",
    "#PassportNumber#",
    "#CardNumber#",
)
# Large offsets so that e.g. train with seed 1 never equals validation with seed 0.
SPLIT_SEEDS: dict[str, int] = {"train": 0, "validation": 10_000, "test": 20_000}

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
NUMBERS = ("two", "three", "four", "five", "six", "seven", "eight")
EVENING = ("6 pm", "6:30 pm", "7 pm", "7:30 pm", "8 pm", "8:30 pm")
DAYTIME = ("9 am", "10 am", "10:30 am", "11 am", "2 pm", "3 pm", "4:30 pm")
NAMES = ("Tom", "Anna", "Mike", "Lucy", "David", "Emma", "Jack", "Sarah")
CITIES = ("London", "Paris", "Boston", "Chicago", "Seoul", "Tokyo", "Berlin", "Rome")
COLOURS = ("red", "blue", "black", "white", "green", "grey", "brown")

Turns = list[tuple[int, str]]


class _Scene:
    """Collects (speaker, line) turns; each line is one of several paraphrases filled with slots."""

    def __init__(self, rng: random.Random, **slots: str) -> None:
        self.rng, self.slots = rng, slots
        self.turns: Turns = []

    def say(self, speaker: int, *options: str) -> None:
        self.turns.append((speaker, self.fill(self.rng.choice(options))))

    def fill(self, template: str) -> str:
        return template.format(**self.slots)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p


def _restaurant(r: random.Random) -> tuple[Turns, str]:
    day, alt = r.sample(DAYS, 2)
    s = _Scene(
        r,
        n=r.choice(NUMBERS),
        day=day,
        alt=alt,
        time=r.choice(EVENING),
        name=r.choice(NAMES),
        place=r.choice(("Green Garden", "Golden Dragon", "Little Italy", "Blue Moon")),
    )
    s.say(
        2,
        "Good evening, {place}. How can I help you?",
        "Hello, this is {place} restaurant. What can I do for you today?",
    )
    s.say(
        1,
        "Hi, I'd like to book a table for {n} on {day}, please.",
        "Good evening. Can I reserve a table for {n} people on {day}?",
        "Hi, do you have a free table for {n} on {day} evening?",
    )
    if s.chance(0.4):
        s.say(
            2,
            "Sorry, we are fully booked on {day}. What about {alt}?",
            "I'm afraid {day} is already full. Is {alt} OK for you?",
        )
        s.slots["day"] = alt
        s.say(1, "OK, {day} is fine too.", "Yes, {day} works for me.")
    s.say(2, "Sure. What time would you like to come?", "No problem. For what time?")
    s.say(
        1,
        "At {time}, please. We'd like a table by the window.",
        "Around {time}, if possible. It's a small family dinner.",
    )
    s.say(2, "Can I have your name and phone number, please?", "May I have a name and a phone number for the booking?")
    s.say(
        1, "It's {name}, and my number is #PhoneNumber#.", "Sure, it's under {name}. You can call me at #PhoneNumber#."
    )
    if s.chance(0.6):
        s.say(
            2,
            "Thank you, {name}. So that's a table for {n} on {day} at {time}.",
            "Great, we will see you on {day} at {time}. Have a nice day.",
        )
    return s.turns, s.fill(
        "#Person1# books a table for {n} people at {place} on {day} at {time} under the name {name}."
    )


def _doctor(r: random.Random) -> tuple[Turns, str]:
    day, alt = r.sample(DAYS[:5], 2)
    s = _Scene(
        r,
        day=day,
        alt=alt,
        time=r.choice(DAYTIME),
        k=r.choice(NUMBERS[:4]),
        doctor=r.choice(("Smith", "Brown", "Lee", "Wilson")),
        symptom=r.choice(("a headache", "a sore throat", "a fever", "a cough", "back pain", "a stomach ache")),
    )
    s.say(2, "Good morning, this is the city clinic. How can I help you?", "Hello, clinic. What can I do for you?")
    s.say(
        1,
        "I'd like to see a doctor, please. I have had {symptom} for {k} days.",
        "Hi, I need an appointment. I've had {symptom} for {k} days now and it's getting worse.",
    )
    s.say(2, "I'm sorry to hear that. What is your date of birth?", "OK. Can I have your date of birth, please?")
    s.say(1, "It's #DateOfBirth#.", "My date of birth is #DateOfBirth#.")
    s.say(
        2,
        "Thank you. Dr. {doctor} can see you on {day} at {time}.",
        "Let me see. Dr. {doctor} has time on {day} at {time}. Is that OK?",
    )
    if s.chance(0.4):
        s.say(1, "I can't come on {day}. Is {alt} possible?", "I work on {day}. What about {alt}?")
        s.slots["day"] = alt
        s.say(2, "Yes, {day} at {time} is fine.", "Sure, Dr. {doctor} is free on {day} at {time} too.")
    s.say(1, "Great, thank you. Should I bring anything?", "That's fine. Thanks a lot.")
    s.say(
        2,
        "Just your insurance card, and please come ten minutes early.",
        "Please come ten minutes early. See you then.",
    )
    return s.turns, s.fill(
        "#Person1# has had {symptom} for {k} days and makes an appointment with Dr. {doctor} on {day} at {time}."
    )


def _shopping(r: random.Random) -> tuple[Turns, str]:
    colour, alt = r.sample(COLOURS, 2)
    price = r.randrange(20, 95, 5)
    s = _Scene(
        r,
        colour=colour,
        alt=alt,
        price=str(price),
        low=str(price - 5),
        pay=r.choice(("by card", "in cash")),
        item=r.choice(("shirt", "jacket", "dress", "sweater", "coat", "skirt", "hat", "scarf")),
        size=r.choice(("small", "medium", "large")),
    )
    s.say(2, "Hello, can I help you with anything?", "Good afternoon. Are you looking for something special today?")
    s.say(
        1, "Yes, I'm looking for a {colour} {item} for the winter.", "I want to buy a {colour} {item}. Do you have one?"
    )
    if s.chance(0.4):
        s.say(
            2,
            "Sorry, we don't have it in {colour}. We only have {alt}.",
            "The {colour} one is sold out, but there is a {alt} one.",
        )
        s.slots["colour"] = alt
        s.say(1, "OK, I'll take {colour} then.", "Fine, {colour} is OK too.")
    s.say(
        2,
        "What size do you need? You can try it on over there.",
        "Which size are you? We have small, medium and large.",
    )
    s.say(1, "Size {size}, please. It looks nice. How much is it?", "I need a {size} one. What's the price?")
    s.say(2, "It's {price} dollars.", "This one is {price} dollars. It's very popular this year.")
    if s.chance(0.4):
        s.say(1, "That's a bit expensive. Can you give me a discount?", "Hmm, can you make it a little cheaper?")
        s.slots["price"] = s.slots["low"]
        s.say(2, "OK, you can have it for {price} dollars.", "For you, {price} dollars.")
    s.say(1, "I'll take it. Can I pay {pay}?", "Good, I'll take it. I'd like to pay {pay}.")
    return s.turns, s.fill("#Person1# buys a {colour} {item} in size {size} for {price} dollars and pays {pay}.")


def _ticket(r: random.Random) -> tuple[Turns, str]:
    early, late = sorted(r.sample(range(len(DAYTIME)), 2))
    s = _Scene(
        r,
        early=DAYTIME[early],
        late=DAYTIME[late],
        n=r.choice(NUMBERS[:3]),
        city=r.choice(CITIES),
        day=r.choice(DAYS),
        kind=r.choice(("one-way", "return")),
        mode=r.choice(("train", "bus", "plane")),
        price=str(r.randrange(30, 200, 10)),
    )
    s.slots["time"] = r.choice((s.slots["early"], s.slots["late"]))  # the summary keeps the departure picked
    s.say(2, "Good morning. Where would you like to go today?", "Next, please. Where are you going?")
    s.say(
        1,
        "I'd like {n} {kind} tickets to {city} for {day}, please.",
        "Hi, can I get {n} {kind} {mode} tickets to {city}? We want to go on {day}.",
    )
    s.say(
        2,
        "Let me check. There is a {mode} at {early} and one at {late}.",
        "On {day}, the {mode} leaves at {early} or at {late}.",
    )
    s.say(1, "The {time} one, please. We don't want to be late.", "I'll take the one at {time}.")
    if s.slots["mode"] == "plane":
        s.say(2, "Can I see your passport, please?", "I need your passport number, please.")
        s.say(1, "Here you are. The number is #PassportNumber#.", "Sure, it's #PassportNumber#.")
    s.say(2, "OK. That's {price} dollars in total.", "Here are your tickets. {price} dollars, please.")
    s.say(1, "I'll pay by card. The number is #CardNumber#.", "Here is my card.", "Here you are. Thank you.")
    return s.turns, s.fill("#Person1# buys {n} {kind} {mode} tickets to {city} for {day}. The {mode} leaves at {time}.")


def _interview(r: random.Random) -> tuple[Turns, str]:
    s = _Scene(
        r,
        k=r.choice(NUMBERS[:5]),
        city=r.choice(CITIES),
        job=r.choice(("teacher", "driver", "nurse", "designer", "sales manager", "software engineer", "cook")),
    )
    s.say(
        1,
        "Please have a seat. You are here for the {job} job, right?",
        "Good morning. So you want to work as a {job} here?",
    )
    s.say(2, "Yes, that's right. Thank you for seeing me.", "Yes. I saw your ad last week.")
    s.say(1, "Tell me about your experience.", "How much experience do you have?")
    s.say(2, "I have worked as a {job} in {city} for {k} years.", "I was a {job} for {k} years at a company in {city}.")
    if s.chance(0.5):
        s.say(1, "Why do you want to leave your job?", "Why do you want to work for us?")
        s.say(2, "I want to live closer to my family.", "I'm looking for a new challenge, and I like your company.")
    s.say(
        1,
        "Good. We will send you an email next week. What is your email address?",
        "Thank you. Can you give me your email? We will contact you soon.",
    )
    s.say(2, "It's #Email#. I look forward to hearing from you.", "Sure, it's #Email#.")
    return s.turns, s.fill(
        "#Person1# interviews #Person2# for the {job} job. #Person2# has worked "
        "in {city} for {k} years. #Person1# will email #Person2#."
    )


def _lost_item(r: random.Random) -> tuple[Turns, str]:
    colour, alt = r.sample(COLOURS, 2)
    s = _Scene(
        r,
        colour=colour,
        alt=alt,
        day=r.choice(DAYS),
        item=r.choice(("wallet", "phone", "umbrella", "bag", "watch", "backpack")),
        place=r.choice(("on the bus", "in the park", "at the station", "in the library", "in a taxi")),
    )
    s.say(1, "Excuse me, is this the lost and found office?", "Hello, I think I lost something. Can you help me?")
    s.say(2, "Yes. What did you lose?", "Of course. What is it?")
    s.say(
        1,
        "I lost my {colour} {item} {place} on {day}.",
        "My {colour} {item} is missing. I think I left it {place} on {day}.",
    )
    s.say(2, "Can you tell me more about it?", "What does it look like?")
    s.say(1, "It's quite new. I bought it last month.", "It's not big, and it has my name on it.")
    if s.chance(0.5):
        s.say(
            2,
            "We have a {alt} {item} here. Is it yours?",
            "Someone brought in a {alt} {item} this morning. Is that it?",
        )
        s.say(1, "No, mine is {colour}.", "No, that's not mine. Mine is {colour}.")
    s.say(
        2,
        "Leave me your phone number and we will call you if we find it.",
        "Can I have your number? We'll call you if it turns up.",
    )
    s.say(1, "Sure, it's #PhoneNumber#.", "OK, my number is #PhoneNumber#. Thank you so much.")
    return s.turns, s.fill(
        "#Person1# lost a {colour} {item} {place} on {day}. #Person2# will call #Person1# if someone finds it."
    )


def _apartment(r: random.Random) -> tuple[Turns, str]:
    day, alt = r.sample(DAYS, 2)
    rent = r.randrange(800, 1600, 100)
    s = _Scene(
        r,
        day=day,
        alt=alt,
        rent=str(rent),
        low=str(rent - 100),
        rooms=r.choice(NUMBERS[:3]),
        area=r.choice(("near the station", "in the city centre", "near the park")),
    )
    s.say(
        1,
        "Hello, I'm calling about the apartment for rent. Is it still free?",
        "Hi, I saw your ad for an apartment online.",
    )
    s.say(
        2,
        "Yes. It has {rooms} bedrooms and it is {area}.",
        "Right, it's a {rooms} bedroom apartment {area}. It's quiet and sunny.",
    )
    s.say(1, "That sounds good. How much is the rent?", "Sounds nice. What is the rent?")
    s.say(2, "It's {rent} dollars a month.", "The rent is {rent} dollars a month, and water is included.")
    if s.chance(0.3):
        s.say(1, "That's a bit much for me. Can you lower it?", "Is the price a little flexible?")
        s.slots["rent"] = s.slots["low"]
        s.say(2, "OK, I can make it {rent} dollars.", "Fine, {rent} dollars a month then.")
    s.say(1, "Can I come and see it on {day}?", "When can I see it? Is {day} OK?")
    if s.chance(0.4):
        s.say(2, "I'm busy on {day}. Can you come on {alt}?", "Sorry, not {day}. How about {alt}?")
        s.slots["day"] = alt
        s.say(1, "Sure, {day} is fine.", "OK, see you on {day}.")
    s.say(2, "Sure. The address is #Address#.", "No problem. It's at #Address#, on the second floor.")
    return s.turns, s.fill(
        "#Person1# wants to rent a {rooms} bedroom apartment {area} for {rent} dollars "
        "a month and will see it on {day}."
    )


def _birthday(r: random.Random) -> tuple[Turns, str]:
    time, alt = (EVENING[i] for i in sorted(r.sample(range(len(EVENING)), 2)))  # a late guest pushes the start later
    g = r.choice((2, 3))  # speaker who brings the gift; 3 makes it a three-person chat
    s = _Scene(
        r,
        time=time,
        alt=alt,
        name=r.choice(NAMES),
        day=r.choice(DAYS),
        n=r.choice(NUMBERS),
        giver=f"#Person{g}#",
        who="#Person1#, #Person2# and #Person3#" if g == 3 else "#Person1# and #Person2#",
        gift=r.choice(("cake", "book", "camera", "game", "lamp")),
        place=r.choice(("at my house", "at a cafe", "in the park", "at Green Garden")),
    )
    s.say(
        1,
        "{name}'s birthday is on {day}. Let's have a surprise party!",
        "Did you know it's {name}'s birthday on {day}? We should have a party.",
    )
    s.say(2, "Great idea! Where should we have it?", "Sure! Where do you want to have it?")
    s.say(1, "How about {place}? We can start at {time}.", "Let's do it {place} and start at {time}.")
    if s.chance(0.4):
        s.say(g, "I can't come before {alt}. Can we start at {alt}?", "I finish work late that day. Is {alt} OK?")
        s.slots["time"] = alt
        s.say(1, "OK, {time} then.", "Fine, let's start at {time}.")
    s.say(2, "Who should we invite?", "How many people will come?")
    s.say(1, "Just our friends from school, about {n} people.", "Not too many, maybe {n} people.")
    s.say(g, "I will bring a {gift}.", "I can buy a {gift} for {name}.")
    s.say(1, "Perfect. I'll tell the others, but don't tell {name}!", "Good, I'll tell everyone.")
    return s.turns, s.fill(
        "{who} plan a surprise party for {name} on {day} at {time} {place}. {giver} will bring a {gift}."
    )


def _delivery(r: random.Random) -> tuple[Turns, str]:
    day, alt = r.sample(DAYS, 2)
    start, end = r.choice((("9 am", "11 am"), ("10 am", "12 pm"), ("1 pm", "3 pm"), ("2 pm", "5 pm"), ("4 pm", "6 pm")))
    s = _Scene(
        r,
        day=day,
        alt=alt,
        start=start,
        end=end,
        item=r.choice(("sofa", "table", "bed", "desk", "lamp", "bike", "package", "washing machine")),
    )
    s.say(
        1,
        "Hello, I ordered a {item} from your shop last week, but it hasn't arrived yet.",
        "Hi, I'm calling about my {item}. I paid for it ten days ago and it still hasn't come.",
    )
    s.say(
        2,
        "I'm very sorry about that. Can I have your address, please?",
        "Let me check that for you. What is your address?",
    )
    s.say(1, "It's #Address#.", "I live at #Address#.")
    s.say(
        2,
        "Thank you. It will be delivered on {day} between {start} and {end}.",
        "I see the problem. The driver will bring it on {day}, between {start} and {end}.",
    )
    if s.chance(0.4):
        s.say(1, "I'm not home on {day}. Can you come on {alt}?", "{day} is bad for me. Is {alt} possible?")
        s.slots["day"] = alt
        s.say(2, "Sure, {day} between {start} and {end} is fine.", "No problem, we'll come on {day}.")
    s.say(1, "OK, thank you. Please call me before you come.", "Good, thanks for your help.")
    s.say(2, "Of course. Sorry again for the wait.", "You're welcome. Sorry again.")
    return s.turns, s.fill(
        "#Person1#'s {item} has not arrived. #Person2# says it will be delivered to "
        "#Address# on {day} between {start} and {end}."
    )


def _tech_support(r: random.Random) -> tuple[Turns, str]:
    s = _Scene(
        r,
        day=r.choice(DAYS[:5]),
        time=r.choice(DAYTIME),
        device=r.choice(("laptop", "phone", "printer", "tablet", "router", "computer")),
        problem=r.choice(("won't turn on", "is very slow", "can't connect to the internet", "keeps shutting down")),
        fix=r.choice(("restart it", "charge it", "update it", "reset it")),
    )
    s.say(2, "Tech support, how can I help you?", "Hello, this is customer service. What can I do for you?")
    s.say(1, "Hi, my {device} {problem}.", "I have a problem. My {device} {problem}.")
    s.say(2, "When did the problem start?", "I see. How long has it been like this?")
    s.say(1, "Since yesterday evening. It was fine before that.", "For a few days now. I didn't do anything special.")
    s.say(2, "Have you tried to {fix}?", "OK. Please try to {fix} first.")
    if s.chance(0.5):
        s.say(1, "OK, one moment. Yes, it works now!", "Let me try. Oh, it works again!")
        s.say(2, "Great. Is there anything else I can help you with?", "Good. Is there anything else?")
        s.say(1, "No, that's all. Thanks a lot.", "No, thank you.")
        return s.turns, s.fill("#Person1#'s {device} {problem}. #Person2# tells #Person1# to {fix} and now it works.")
    s.say(1, "I tried that, but it still doesn't work.", "I did that already, but nothing changed.")
    s.say(
        2,
        "Then we will send a technician on {day} at {time}. What is your email?",
        "OK, a technician can visit you on {day} at {time}. Can I have your email for the details?",
    )
    s.say(1, "It's #Email#.", "Sure, it's #Email#. Thank you.")
    return s.turns, s.fill("#Person1#'s {device} {problem}. #Person2# will send a technician on {day} at {time}.")


SCENES: dict[str, Callable[[random.Random], tuple[Turns, str]]] = {
    "restaurant booking": _restaurant,
    "doctor appointment": _doctor,
    "shopping": _shopping,
    "ticket booking": _ticket,
    "job interview": _interview,
    "lost item": _lost_item,
    "apartment rental": _apartment,
    "birthday party": _birthday,
    "delivery": _delivery,
    "tech support": _tech_support,
}

# Filler pairs that never change the summary, like the chit-chat in real dialogue data.
SMALL_TALK = (
    ("By the way, the weather is lovely today.", "Yes, I hope it stays sunny."),
    ("Sorry, it's a bit noisy here.", "No problem, I can hear you."),
    ("Just a second, please.", "Sure, take your time."),
)
GOODBYES = (
    ("Thanks a lot.", "My pleasure. Have a nice day."),
    ("OK, see you then.", "See you. Bye!"),
    ("Great, talk to you later.", "Bye!"),
)


def _filler(rng: random.Random, pairs: tuple[tuple[str, str], ...], after: int) -> Turns:
    """A filler pair that keeps the turn-taking: it starts with whoever did not speak last."""
    a = 2 if after == 1 else 1
    first, second = rng.choice(pairs)
    return [(a, first), (3 - a, second)]


def _example(rng: random.Random) -> tuple[str, str, str]:
    topic = rng.choice(list(SCENES))
    turns, summary = SCENES[topic](rng)
    if len(turns) <= 8 and rng.random() < 0.3:
        i = rng.randrange(1, len(turns))
        turns[i:i] = _filler(rng, SMALL_TALK, turns[i - 1][0])
    if len(turns) <= 8 and rng.random() < 0.4:
        turns += _filler(rng, GOODBYES, turns[-1][0])
    dialogue = "\n".join(f"#Person{speaker}#: {line}" for speaker, line in turns)
    return dialogue, summary, topic


def generate(n: int, seed: int) -> list[dict]:
    """n examples, deterministic in seed: dicts with keys id, dialogue, summary, topic."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        dialogue, summary, topic = _example(rng)
        out.append({"id": f"synthetic_{i:05d}", "dialogue": dialogue, "summary": summary, "topic": topic})
    return out


def generate_split(split: str, n: int, seed: int) -> list[dict]:
    """Like generate, but the split shifts the seed so train/validation/test differ."""
    return [{**ex, "id": f"synthetic_{split}_{i:05d}"} for i, ex in enumerate(generate(n, seed + SPLIT_SEEDS[split]))]
