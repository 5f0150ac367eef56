"""Build a self-supervised extractive QA set (SQuAD v1.1 JSON) from documents, with no model and no network.

The method follows Lewis et al. (2019), "Unsupervised Question Answering by Cloze Translation", with rules in
place of their parser and NER:

1. Answer spans are found in each sentence by pattern: dates, years, amounts of money, percentages, counts ("50
   contestants" -> "how many contestants"), durations, capitalised name sequences (typed person / place / other
   from titles, prepositions and a lexicon learnt from the text itself) and determiner noun phrases.
2. The cloze (the answer's clause with the answer masked) becomes a question. The wh-phrase chosen by the span type
   goes first when that stays grammatical: the answer is the clause's subject ("Who stood out ...?"), or the clause
   starts with a simple subject and verb, which gets auxiliary inversion or do-support ("When did Albert Zahm begin
   ...?", "What would the agencies be?"). Otherwise the wh-phrase replaces the answer in place, an echo question
   ("... families who live where?"), rather than a scrambled sentence. Grammatical wh-first forms score higher.
3. The context is a window of whole sentences of the document around the answer sentence (about 60-120 words).
   A span that recurs in another sentence of the document also yields, at random, a question whose context is a
   window around the other occurrence that leaves the question's own sentence out (as in Dhingra et al. 2018), so
   that question and context share less wording.

Each sentence gives at most one question (the best-scored candidate, ties broken by a seeded RNG); every answer is
checked to be the exact substring of its context at ``answer_start``.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

MAX_CONTEXT_WORDS = 120
MIN_CONTEXT_WORDS = 60
MIN_SENTENCE_WORDS = 6
MAX_SENTENCE_WORDS = 45
MIN_QUESTION_WORDS = 5
MAX_QUESTION_WORDS = 30
MAX_ANSWER_WORDS = 8
MIN_CLAUSE_WORDS = 5
MAX_SUBJECT_WORDS = 6
MAX_IN_PLACE_LEFT = 14

SUBJECT_SCORE = 4
INVERTED_SCORE = 3
IN_PLACE_SCORE = 1

STOP_WORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before being below
    between both but by can could did do does doing down during each either else even ever every few for from
    further had has have having he her here hers herself him himself his how i if in into is it its itself just
    least less let like may me might more most much must my myself neither no nor not now of off on once one only
    or other ought our ours ourselves out over own per quite rather really same shall she should so some still
    such than that the their theirs them themselves then there these they this those though through thus to too
    under until up upon us very was we were what when where whether which while who whom whose why will with
    within without would yet you your yours yourself yourselves ago almost whenever wherever whatever whoever""".split()
)
SUBJECT_PRONOUNS = frozenset("i you he she it we they".split())
PLURAL_PRONOUNS = frozenset("i you we they".split())
MODALS = frozenset(
    """will would can could should may might must shall won't can't cannot couldn't wouldn't shouldn't don't doesn't
    didn't isn't aren't wasn't weren't hasn't haven't hadn't""".split()
)
BE_FORMS = frozenset("is are was were".split())
HAVE_FORMS = frozenset("has have had".split())
DO_FORMS = frozenset("does do did".split())
DETERMINERS = frozenset("a an the this these those his her its their our my your another every each".split())
# Words before a capitalised sequence that make it a modifier in a longer phrase ("No New Yorker").
NAME_MODIFIERS = DETERMINERS - {"the"} | frozenset("no any some many few most all".split())
PERSONAL_TITLES = frozenset(
    """mr. mrs. ms. dr. gov. sen. rep. gen. lt. col. capt. rev. prof. president senator governor mayor judge
    justice secretary chancellor king queen pope prince princess sir lord ambassador commissioner chairman
    representative""".split()
)
ABBREVIATIONS = frozenset(
    """mr mrs ms dr gov sen rep gen lt col capt rev prof st jr sr inc corp co ltd jan feb mar apr aug sept sep oct
    nov dec vs mt ft""".split()
)
PLACE_WORDS = frozenset(
    """street streets avenue road square park city county island islands river lake bay valley harbor bridge
    airport station state states country kingdom republic coast beach mountains heights village town""".split()
)
ORGANISATION_WORDS = frozenset(
    """company corporation inc. corp. party committee council administration department agency bank board
    commission court congress senate house times university college school institute association union
    bureau authority fund foundation office ministry army navy""".split()
)
TIME_ADVERBS = frozenset("next last yesterday today tomorrow tonight recently later earlier ago".split())
PERSON_CUES = frozenset("said says who told wrote argued added".split())
# Nouns of idioms and quantities that make poor answers ('a lot', 'a bit of a pain', 'the first place').
VAGUE_NOUNS = frozenset(
    """lot little bit few couple sort kind type given number variety series pair whole first second last next other
    same rest one two three four five six seven eight nine ten""".split()
)
PERSON_NOUNS = frozenset(
    """people man men woman women child children kids parents family critics officials president leaders voters
    workers citizens residents students teachers doctors lawyers police""".split()
)
DISCOURSE_MARKERS = frozenset(
    """and but so yet or however still now then also indeed instead moreover meanwhile thus nevertheless
    nonetheless besides furthermore""".split()
)
WHEN_PREPOSITIONS = {"in": "when", "on": "when", "during": "when", "at": "when", "since": "since when"}
WHERE_PREPOSITIONS = frozenset("in at near across throughout outside inside around".split())
OBJECT_PREPOSITIONS = frozenset("of for by with to from about against into onto toward towards among".split())
IRREGULAR_PLURALS = frozenset("people men women children police feet teeth cattle staff".split())
PARTICIPLES = frozenset(
    """been done made taken given seen gone become come got gotten had said told found known shown begun brought
    bought thought left lost kept held paid sent spent won written heard built led met sold taught""".split()
)
IRREGULAR_PAST = dict(
    pair.split(":")
    for pair in """said:say made:make took:take gave:give went:go came:come found:find told:tell thought:think
    bought:buy got:get knew:know saw:see left:leave paid:pay brought:bring sent:send kept:keep held:hold
    wrote:write began:begin became:become ran:run won:win lost:lose felt:feel meant:mean spent:spend built:build
    stood:stand heard:hear led:lead met:meet sold:sell taught:teach understood:understand wore:wear chose:choose
    fell:fall drove:drive ate:eat broke:break spoke:speak rose:rise grew:grow threw:throw caught:catch
    fought:fight sought:seek struck:strike had:have did:do drew:draw sat:sit hung:hang shot:shoot fed:feed flew:fly
    forgot:forget hid:hide rode:ride sang:sing swam:swim woke:wake withdrew:withdraw overcame:overcome""".split()
)
# Stems whose past tense dropped an 'e' ('created', 'used', 'noted'); a guess for verbs the lexicon lacks.
E_DROPPING_ENDINGS = ("at", "iz", "is", "v", "c", "g", "ur", "ir", "ut", "ot", "us", "os", "am")
IRREGULAR_PRESENT = {"says": "say", "has": "have", "does": "do", "goes": "go"}
TIME_UNITS = "years?|months?|weeks?|days?|decades?|centuries|hours?|minutes?"

_NUMBER = r"\d+(?:[,.]\d+)*"
_NUMBER_WORDS = (
    r"two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|forty|fifty|sixty|"
    r"seventy|eighty|ninety|hundreds|thousands|millions|dozens|a dozen|a hundred|a thousand"
)
_HEDGE = r"(?:(?:about|nearly|almost|roughly|approximately|some|over|more than|less than|fewer than|at least|up to) )?"
_MAGNITUDE = r"(?: (?:hundred|thousand|million|billion|trillion))?"
_MONTHS_FULL = "January|February|April|June|July|August|September|October|November|December"
_MONTHS_ABBR = r"Jan\.|Feb\.|Aug\.|Sept\.|Sep\.|Oct\.|Nov\.|Dec\."
_DAY = r" \d{1,2}(?:st|nd|rd|th)?"
_YEAR = r"(?:1[6-9]\d\d|20[0-3]\d)"
_WEEKDAYS = "Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday"

DATE_RE = re.compile(
    rf"\b(?:(?:{_MONTHS_FULL}|{_MONTHS_ABBR}|March|May)(?:{_DAY}(?:,? {_YEAR})?| {_YEAR})"
    rf"|(?:{_MONTHS_FULL}|{_MONTHS_ABBR})(?!\w)"
    rf"|(?:{_WEEKDAYS})(?:,? (?:{_MONTHS_FULL}|{_MONTHS_ABBR}|March|May){_DAY})?)"
)
YEAR_RE = re.compile(rf"(?<![\w$.,]){_YEAR}(?![\w%]|[.,]\d| percent)|(?<![\w$.,])(?:1[6-9]|20)?\d0'?s\b")
MONEY_RE = re.compile(
    rf"{_HEDGE}(?:\$ ?{_NUMBER}{_MAGNITUDE}|{_NUMBER}{_MAGNITUDE} (?:dollars|cents)|(?:{_NUMBER_WORDS}) dollars)\b"
)
PERCENT_RE = re.compile(rf"{_HEDGE}{_NUMBER}(?: ?%| percent\b| per cent\b)")
AGO_RE = re.compile(rf"\b{_HEDGE}(?:{_NUMBER}|{_NUMBER_WORDS}|a few|several|an?|one) (?:{TIME_UNITS}) ago\b")
DURATION_RE = re.compile(rf"\b[Ff]or ({_HEDGE}(?:{_NUMBER}|{_NUMBER_WORDS}) (?:{TIME_UNITS}))\b")
AGE_RE = re.compile(rf"(?<![\w$.,])({_NUMBER}) years old\b")
COUNT_RE = re.compile(
    rf"(?<![\w$.,])({_HEDGE}(?:{_NUMBER}{_MAGNITUDE}|(?:{_NUMBER_WORDS}){_MAGNITUDE}))"
    rf" ([a-z][a-z-]*[a-z])(?: ([a-z][a-z-]*[a-z]))?\b"
)
TOKEN_RE = re.compile(
    r"\$?\d+(?:[,.]\d+)*(?:st|nd|rd|th|d|'?s)?%?|[^\W\d_]\.(?:&?[^\W\d_]\.)+|[^\W\d_](?:[\w&'’-]*\w)?\.?|\S"
)
ORDINAL_RE = re.compile(r"\d+(?:st|nd|rd|th|d)")  # the Times writes '42d Street'
NAME_CONNECTORS = frozenset("of for and & de del du van von der la".split())
AUXILIARIES = MODALS | BE_FORMS | HAVE_FORMS | DO_FORMS
# Words between the verb and the answer that put the answer in another clause, where fronting would garble it.
FRONTING_BLOCKERS = (
    SUBJECT_PRONOUNS
    | AUXILIARIES
    | frozenset("and or but that which who whom when where if because as while although than whether so not".split())
)
CLAUSE_BREAK_RE = re.compile(r", |; |: | - | -- | \(|\) ")


class DocumentLike(Protocol):
    """A document: its collection, id and sentences in order (``corpora.Document`` is one)."""

    @property
    def collection(self) -> str:
        """The collection the document belongs to."""
        ...

    @property
    def id(self) -> str:
        """The document id within its collection."""
        ...

    @property
    def sentences(self) -> Sequence[str]:
        """The document's sentences in order."""
        ...


@dataclass(frozen=True)
class Lexicon:
    """Word statistics learnt from raw text, standing in for a part-of-speech tagger and NER.

    ``lowercase_words`` are seen in lower case; ``nominal_words`` right after a determiner (nouns, adjectives);
    ``verbal_words`` right after a subject pronoun (verbs, adverbs); ``person_names`` right after a title.
    """

    lowercase_words: frozenset[str]
    nominal_words: frozenset[str]
    verbal_words: frozenset[str]
    person_names: frozenset[str]


@dataclass(frozen=True)
class Token:
    """A word or punctuation mark with its character offsets in the sentence."""

    text: str
    start: int
    end: int

    @property
    def lower(self) -> str:
        """The lower-cased text."""
        return self.text.lower()


@dataclass(frozen=True)
class AnswerSpan:
    """An answer candidate: ``sentence[start:end]``, its type and wh-phrase, and the region the question masks.

    The masked region ``[mask_start, mask_end)`` covers the answer and what the wh-phrase absorbs (a preposition
    before a place or date, the counted noun after "how many"); ``priority`` orders overlapping candidates.
    """

    start: int
    end: int
    kind: str
    wh: str
    mask_start: int
    mask_end: int
    priority: int


@dataclass(frozen=True)
class Question:
    """A generated question about the answer span of one sentence, with its quality score."""

    text: str
    span: AnswerSpan
    sentence_index: int
    score: int


@dataclass(frozen=True)
class QAExample:
    """One SQuAD-style example: a question, its context window and the answer at ``answer_start``."""

    id: str
    title: str
    question: str
    context: str
    answer: str
    answer_start: int


def tokenize(sentence: str) -> list[Token]:
    """Split a sentence into words (abbreviations and initials keep their period) and punctuation marks."""
    tokens = []
    for match in TOKEN_RE.finditer(sentence):
        text, start, end = match.group(), match.start(), match.end()
        number_sign = text == "No." and sentence[end + 1 : end + 2].isdigit()  # 'Red Dye No. 3'
        abbreviation = text[:-1].lower() in ABBREVIATIONS or number_sign
        if text.endswith(".") and len(text) > 2 and text.count(".") == 1 and not abbreviation:
            tokens.append(Token(text[:-1], start, end - 1))
            tokens.append(Token(".", end - 1, end))
        else:
            tokens.append(Token(text, start, end))
    return tokens


def _is_word(token: Token) -> bool:
    return token.text[0].isalnum() or token.text[0] == "$"


def _is_capitalised(token: Token) -> bool:
    return token.text[0].isupper()


def build_lexicon(sentences: Iterable[str]) -> Lexicon:
    """Learn which words occur in lower case, after a determiner, after a subject pronoun and after a title.

    Lower-case words are learnt from cased sentences only: all-lower-case text also writes names in lower case.
    """
    lowercase: set[str] = set()
    nominal: set[str] = set()
    verbal: set[str] = set()
    names: set[str] = set()
    for sentence in sentences:
        tokens = [token for token in tokenize(sentence) if _is_word(token)]
        cased = bool(tokens) and tokens[0].text[0].isupper()
        for previous, token in zip(tokens, tokens[1:]):
            plain = token.text.isalpha() and token.text.islower()
            if plain and cased:
                lowercase.add(token.text)
            if plain and previous.lower in DETERMINERS:
                nominal.add(token.text)
            if plain and previous.lower in SUBJECT_PRONOUNS:
                verbal.add(token.text)
            if previous.lower in PERSONAL_TITLES and _is_capitalised(token):
                names.add(token.text)
    return Lexicon(frozenset(lowercase), frozenset(nominal - STOP_WORDS), frozenset(verbal), frozenset(names))


# --- answer spans -------------------------------------------------------------------------------------------------


def _span(start: int, end: int, kind: str, wh: str, priority: int, mask: tuple[int, int] | None = None) -> AnswerSpan:
    mask_start, mask_end = mask if mask is not None else (start, end)
    return AnswerSpan(start, end, kind, wh, mask_start, mask_end, priority)


def _temporal_span(sentence: str, start: int, end: int, kind: str, priority: int) -> AnswerSpan | None:
    """A 'when' span; a preceding in/on/during/at/since joins the mask, other function words rule it out."""
    previous = re.search(r"(\w+) $", sentence[:start])
    if previous is None:
        return _span(start, end, kind, "when", priority)
    word = previous.group(1).lower()
    if word in WHEN_PREPOSITIONS:
        return _span(start, end, kind, WHEN_PREPOSITIONS[word], priority, (previous.start(1), end))
    if word in STOP_WORDS or word in OBJECT_PREPOSITIONS:
        return None
    return _span(start, end, kind, "when", priority)


def numeric_spans(sentence: str) -> Iterator[AnswerSpan]:
    """Yield date, year, money, percentage, duration, age and count answer candidates."""
    for regex, kind, priority in ((DATE_RE, "date", 0), (YEAR_RE, "year", 1)):
        for match in regex.finditer(sentence):
            span = _temporal_span(sentence, match.start(), match.end(), kind, priority)
            if span is not None and _stands_alone(sentence, match.end()):
                yield span
    for match in AGO_RE.finditer(sentence):
        yield _span(match.start(), match.end(), "time", "when", 1)
    for regex, kind, wh in ((MONEY_RE, "money", "how much"), (PERCENT_RE, "percent", "what percentage")):
        for match in regex.finditer(sentence):
            if _stands_alone(sentence, match.end()):
                yield _span(match.start(), match.end(), kind, wh, 2)
    for match in DURATION_RE.finditer(sentence):
        if _stands_alone(sentence, match.end()) and not sentence.startswith(" of", match.end()):
            yield _span(match.start(1), match.end(1), "duration", "how long", 3, (match.start(), match.end()))
    for match in AGE_RE.finditer(sentence):
        yield _span(match.start(1), match.end(1), "age", "how old", 3, (match.start(), match.end()))
    yield from _count_spans(sentence)


def _stands_alone(sentence: str, end: int) -> bool:
    """Whether no content word follows: not '$10 bill', '100 percent cotton', 'Thursday night'."""
    following = re.match(r" ([a-z]+)", sentence[end:])
    return following is None or following.group(1) in STOP_WORDS


def _is_plural(word: str) -> bool:
    return word in IRREGULAR_PLURALS or (word.endswith("s") and not word.endswith(("ss", "us", "is")))


def _count_spans(sentence: str) -> Iterator[AnswerSpan]:
    """'about 50 contestants' -> answer 'about 50', wh-phrase 'how many contestants'."""
    position = 0
    while (match := COUNT_RE.search(sentence, position)) is not None:
        position = match.end(1)  # a rejected '1990 about' must not hide 'about 50 contestants'
        nouns = [word for word in match.group(2, 3) if word is not None]
        if nouns[0] in STOP_WORDS or re.search(r"(?<![\d.,])0\d", match.group(1)):
            continue  # not '007 pokes'
        if re.search(r"[A-Z]\w* $", sentence[: match.start(1)]):
            continue  # not 'Sonnet 135 puts'
        if len(nouns) == 2 and (nouns[1] in STOP_WORDS or _is_plural(nouns[0]) or not _is_plural(nouns[1])):
            nouns = nouns[:1]
        if not _is_plural(nouns[-1]):
            continue
        noun_end = match.start(2) + len(" ".join(nouns))
        wh = f"how many {' '.join(nouns)}"
        yield _span(match.start(1), match.end(1), "count", wh, 4, (match.start(1), noun_end))


def name_spans(sentence: str, lexicon: Lexicon) -> Iterator[AnswerSpan]:
    """Yield capitalised name sequences ('the Board of Estimate', 'Dr. William Dement'), typed who/where/what."""
    tokens = tokenize(sentence)
    index = 0
    while index < len(tokens):
        end = _name_end(tokens, index)
        if end > index:
            span = _typed_name(sentence, tokens, index, end, lexicon)
            if span is not None:
                yield span
            index = end
        else:
            index += 1


def _starts_name(tokens: Sequence[Token], index: int) -> bool:
    token = tokens[index]
    if ORDINAL_RE.fullmatch(token.text):
        return index + 1 < len(tokens) and _is_capitalised(tokens[index + 1])
    return _is_capitalised(token) and token.text[0].isalpha()


def _name_end(tokens: Sequence[Token], index: int) -> int:
    """Return the end (exclusive) of the capitalised sequence starting at ``index``, or ``index`` if none."""
    if not _starts_name(tokens, index):
        return index
    end = index + 1
    while end < len(tokens) and not tokens[end - 1].text.endswith(("'s", "’s")):
        if _starts_name(tokens, end) and tokens[end].start == tokens[end - 1].end + 1:
            end += 1
        elif tokens[end].lower in NAME_CONNECTORS and end + 1 < len(tokens) and _is_capitalised(tokens[end + 1]):
            end += 2
        elif tokens[end].lower == "of" and end + 2 < len(tokens) and tokens[end + 1].lower == "the":
            if not _is_capitalised(tokens[end + 2]):
                break
            end += 3
        else:
            break
    return end


def _is_sentence_initial(tokens: Sequence[Token], index: int) -> bool:
    return all(not _is_word(token) for token in tokens[:index])


def _typed_name(sentence: str, tokens: Sequence[Token], first: int, end: int, lexicon: Lexicon) -> AnswerSpan | None:
    """Type a capitalised sequence as a who/where/what answer, or ``None`` when it makes a poor answer."""
    name_start = _skip_common_initial(tokens, first, end, lexicon)
    if name_start is None:
        return None
    first, words = name_start, tokens[name_start:end]
    if not _usable_name(sentence, words, lexicon):
        return None
    if first > 0 and tokens[first - 1].lower == "the":
        first -= 1
    previous = tokens[first - 1] if first > 0 else None
    following = tokens[end] if end < len(tokens) else None
    if _modifies_name(previous, lexicon) or (following is not None and not _ends_name(following, lexicon)):
        return None  # 'upper Fifth Avenue', 'No New Yorker', 'Boesky companies': part of a longer phrase
    if _coordinated(tokens, end, lexicon):
        return None
    start = tokens[first].start
    mask_start = start
    if previous is not None and previous.lower in WHERE_PREPOSITIONS and not _is_organisation(words):
        wh, mask_start = "where", previous.start
    elif _looks_like_person(words, following.lower if following else "", lexicon):
        wh = "who"
    else:
        wh = "what"
    return _span(start, words[-1].end, "name", wh, 5, (mask_start, words[-1].end))


def _skip_common_initial(tokens: Sequence[Token], first: int, end: int, lexicon: Lexicon) -> int | None:
    """Drop a sentence-initial common word ('The', 'Yet', 'Festively') from the sequence; ``None`` if none is left."""
    word = tokens[first].lower
    common = word in STOP_WORDS or (word in lexicon.lowercase_words and end - first == 1)
    if not (_is_sentence_initial(tokens, first) and (common or word.endswith(("ly", "ing")))):
        return first
    return first + 1 if first + 1 < end and _starts_name(tokens, first + 1) else None


def _usable_name(sentence: str, words: Sequence[Token], lexicon: Lexicon) -> bool:
    """Not a possessive, a common word, a date, or a line in capitals ('H. FRANCIS SHATTUCK JR.')."""
    if words[-1].text.endswith(("'s", "’s")) or (len(words) == 1 and words[0].lower in lexicon.lowercase_words):
        return False
    if len(words) > 1 and any(len(word.text) > 3 and word.text.isupper() for word in words):
        return False
    return DATE_RE.fullmatch(sentence[words[0].start : words[-1].end]) is None


def _is_organisation(words: Sequence[Token]) -> bool:
    return any(word.lower in ORGANISATION_WORDS for word in words)


def _looks_like_person(words: Sequence[Token], following: str, lexicon: Lexicon) -> bool:
    """A title ('Mr. Rust'), a demonym ('New Yorkers'), or a name with an initial, a known surname or a cue."""
    if words[0].lower in PERSONAL_TITLES or words[-1].text.endswith(("ans", "ers", "ese")):
        return True
    if _is_organisation(words) or any(word.lower in PLACE_WORDS for word in words):
        return False
    initials = len(words) > 1 and any(re.fullmatch(r"[A-Z]\.", word.text) for word in words)
    return initials or any(word.text in lexicon.person_names for word in words) or following in PERSON_CUES


def _has_vague_noun(words: Sequence[Token]) -> bool:
    return any(word.lower in VAGUE_NOUNS for word in words)


def _coordinated(tokens: Sequence[Token], end: int, lexicon: Lexicon) -> bool:
    """Whether 'and'/'or' and another noun phrase follow: the answer would be half of a coordination."""
    if end + 1 >= len(tokens) or tokens[end].lower not in {"and", "or"}:
        return False
    following = tokens[end + 1]
    return following.lower in DETERMINERS or following.text in lexicon.nominal_words


def _ends_name(following: Token, lexicon: Lexicon) -> bool:
    """Whether a name clearly ends before ``following``: not a number or a noun it modifies ('NBC officials')."""
    word = following.text
    if not word.isalpha() or word[0].isupper() or word in STOP_WORDS:
        return not word[0].isdigit()
    adverb = word in TIME_ADVERBS or word.endswith("ly")
    return adverb or word in lexicon.verbal_words or verb_form(word, lexicon) is not None


def _modifies_name(previous: Token | None, lexicon: Lexicon) -> bool:
    if previous is None:
        return False
    if not previous.text.isalpha():
        return previous.text[0].isdigit()  # '088 FC'
    if previous.lower in NAME_MODIFIERS:
        return True
    return previous.text.islower() and previous.lower not in STOP_WORDS and previous.lower in lexicon.nominal_words


def noun_phrase_spans(sentence: str, lexicon: Lexicon) -> Iterator[AnswerSpan]:
    """Yield determiner noun phrases ('the impact of the zoning change') that end clearly."""
    tokens = tokenize(sentence)
    for index, token in enumerate(tokens):
        if token.lower not in DETERMINERS:
            continue
        end = _nominal_run(tokens, index + 1, lexicon, 4)
        if end == index + 1:
            continue
        if end + 1 < len(tokens) and tokens[end].lower == "of":
            after_of = end + 2 if tokens[end + 1].lower in DETERMINERS else end + 1
            end = _nominal_run(tokens, after_of, lexicon, 3)
            if end == after_of:
                continue
        if end < len(tokens) and not _ends_phrase(tokens[end], lexicon):
            continue  # the phrase may go on: 'her former [governess]'
        if _has_vague_noun(tokens[index + 1 : end]) or _coordinated(tokens, end, lexicon):
            continue
        wh = "who" if tokens[end - 1].lower in PERSON_NOUNS else "what"
        yield _span(token.start, tokens[end - 1].end, "noun_phrase", wh, 6)


def _ends_phrase(following: Token, lexicon: Lexicon) -> bool:
    """Whether a phrase clearly ends before ``following``: punctuation, a function word or a past-tense verb."""
    word = following.text
    if not word[0].isalpha():
        return word[0] not in "$&" and not word[0].isdigit()
    if word[0].isupper() or (word in lexicon.nominal_words and word not in lexicon.verbal_words):
        return False
    form = verb_form(word, lexicon)
    return word in STOP_WORDS or (form is not None and form[0] == "past")


def _nominal_run(tokens: Sequence[Token], index: int, lexicon: Lexicon, limit: int) -> int:
    """Return the end of the run of nominal words from ``index``; a plural ends it ('the teachers [set]')."""
    end = index
    while end < len(tokens) and end - index < limit and tokens[end].text in lexicon.nominal_words:
        end += 1
        if _is_plural(tokens[end - 1].text):
            break
    return end


def answer_spans(sentence: str, lexicon: Lexicon) -> list[AnswerSpan]:
    """Return non-overlapping answer candidates of a sentence, higher-priority types winning overlaps."""
    candidates = [*numeric_spans(sentence), *name_spans(sentence, lexicon), *noun_phrase_spans(sentence, lexicon)]
    chosen: list[AnswerSpan] = []
    for span in sorted(candidates, key=lambda span: (span.priority, span.start, -span.end)):
        if all(span.mask_end <= other.mask_start or span.mask_start >= other.mask_end for other in chosen):
            if _acceptable_answer(sentence[span.start : span.end]):
                chosen.append(span)
    return sorted(chosen, key=lambda span: (span.start, span.end))


def _acceptable_answer(answer: str) -> bool:
    words = answer.split()
    if len(answer) < 2 or len(words) > MAX_ANSWER_WORDS:
        return False
    return any(word.lower().strip(".,$%") not in STOP_WORDS for word in words)


# --- questions ----------------------------------------------------------------------------------------------------


def verb_form(word: str, lexicon: Lexicon) -> tuple[str, str] | None:
    """Return (tense, lemma) of a finite lexical verb form ('past', 'present', 'base'), or ``None``."""
    if word in IRREGULAR_PAST:
        return "past", IRREGULAR_PAST[word]
    if word in IRREGULAR_PRESENT:
        return "present", IRREGULAR_PRESENT[word]
    if len(word) > 4 and word.endswith("ed") and word not in lexicon.nominal_words:
        return "past", _past_lemma(word, lexicon)
    if len(word) > 3 and _is_plural(word) and word not in lexicon.nominal_words:
        lemma = _known_lemma([word[:-1], word[:-2] if word.endswith("es") else "", word[:-3] + "y"], lexicon)
        verbal = lemma in lexicon.verbal_words or word in lexicon.verbal_words
        return ("present", lemma) if lemma and verbal else None
    if word in lexicon.verbal_words and word not in lexicon.nominal_words | STOP_WORDS and not word.endswith("ly"):
        return "base", word
    return None


def _past_lemma(word: str, lexicon: Lexicon) -> str:
    """'appointed' -> 'appoint', 'created' -> 'create', 'stopped' -> 'stop', 'carried' -> 'carry'."""
    stem = word[:-2]
    doubled = stem[:-1] if stem[-1] == stem[-2] else ""
    known = _known_lemma([stem + "e", stem, doubled, word[:-3] + "y" if stem[-1] == "i" else ""], lexicon)
    if known:
        return known
    if stem[-1] == "i":
        return stem[:-1] + "y"
    if stem[-1] == stem[-2] and stem[-1] not in "lsz":
        return stem[:-1]
    return stem + "e" if stem.endswith(E_DROPPING_ENDINGS) else stem


def _known_lemma(candidates: Sequence[str], lexicon: Lexicon) -> str:
    return next((lemma for lemma in candidates if len(lemma) > 1 and lemma in lexicon.lowercase_words), "")


def _starts_with_verb(text: str, lexicon: Lexicon, finite: bool = False) -> bool:
    """Whether ``text`` starts with an auxiliary or a verb form (a finite one, agreeing with 'what', if asked)."""
    first = text.split(" ", 1)[0].lower()
    if first in AUXILIARIES:
        return True
    form = verb_form(first, lexicon)
    return form is not None and not (finite and form[0] == "base")


def _subject_end(words: Sequence[str], lexicon: Lexicon) -> int:
    """Return how many leading words form a simple subject (pronoun, name or noun phrase), or 0."""
    if not words:
        return 0
    first = words[0].lower()
    if first in SUBJECT_PRONOUNS | {"there"}:
        return 1 if len(words) > 1 else 0
    name = words[0][0].isupper() and first not in lexicon.lowercase_words
    if not (first in DETERMINERS or first in lexicon.nominal_words or name):
        return 0  # not a determiner, a noun or a name: 'Eventually', 'Thirty'
    for index, word in enumerate(words[: MAX_SUBJECT_WORDS + 1]):
        following = words[index + 1] if index + 1 < len(words) else ""
        # A verb-like word followed by another verb is a noun: 'negotiators made', 'labels won't'.
        if (
            index
            and word[0].islower()
            and _starts_with_verb(word, lexicon)
            and not _starts_with_verb(following, lexicon)
        ):
            return index
        lower = word.lower()
        if word.endswith(",") or (lower in STOP_WORDS and lower not in DETERMINERS and lower != "of"):
            return 0
        if not (word[0].isupper() or lower in DETERMINERS or lower == "of" or lower in lexicon.nominal_words):
            return 0
    return 0


def _lower_first(text: str, lexicon: Lexicon) -> str:
    """Lower-case a sentence's first word unless it is a name ('House Republicans'), an acronym or 'I'."""
    words = text.split()
    first, second = words[0], words[1] if len(words) > 1 else ""
    function_word = first.lower() in DETERMINERS | SUBJECT_PRONOUNS - {"i"}
    common = (
        first.lower() in lexicon.lowercase_words and first[1:].islower() and first != "I" and not second[:1].isupper()
    )
    return text[0].lower() + text[1:] if function_word or common else text


def _wh_first(left: str, right: str, wh: str, lexicon: Lexicon, initial: bool) -> str | None:
    """Front the wh-phrase over 'subject verb rest', by auxiliary inversion or do-support; ``None`` if unsure.

    ``initial`` says whether ``left`` starts the sentence, so that its first word may be lower-cased.
    """
    words = left.split()
    split = _subject_end(words, lexicon)
    if not split:
        return None
    subject, verb, rest = " ".join(words[:split]), words[split].lower(), words[split + 1 :]
    if initial or words[0].lower() in DETERMINERS | SUBJECT_PRONOUNS:
        subject = _lower_first(subject, lexicon)
    if any(word.lower().strip(",;:") in FRONTING_BLOCKERS or word[-1] in ",;:" for word in rest):
        return None  # the answer sits in an embedded or coordinated clause
    if verb in MODALS | BE_FORMS or (verb in HAVE_FORMS and any(_is_participle(word) for word in rest)):
        return " ".join([wh, verb, subject, *rest, right])
    if verb in DO_FORMS and rest:
        return " ".join([wh, verb, subject, *rest, right])
    form = verb_form(verb, lexicon)
    if form is None:
        return None
    tense, lemma = form
    plural = subject.lower() in PLURAL_PRONOUNS or (subject.lower() not in {"he", "she", "it"} and _is_plural(subject))
    if tense == "base" and not plural:
        return None  # 'the proposal drew': an unknown past form, not a base form
    auxiliary = "did" if tense == "past" else ("do" if plural else "does")
    return " ".join([wh, auxiliary, subject, lemma, *rest, right])


def _is_participle(word: str) -> bool:
    return word in PARTICIPLES or (len(word) > 4 and word.endswith(("ed", "en")))


def _clause_bounds(sentence: str, span: AnswerSpan, lexicon: Lexicon) -> tuple[int, int]:
    """Return the clause around the span: from the last break before it that opens a subject-verb clause (or the
    sentence start) to the first break after it that leaves enough words besides the answer."""
    breaks = [
        match
        for match in CLAUSE_BREAK_RE.finditer(sentence)
        if match.end() <= span.mask_start or match.start() >= span.mask_end
    ]
    start = 0
    for match in breaks:
        before = sentence[match.end() : span.mask_start].split()
        if match.end() <= span.mask_start and (not before or _subject_end(before, lexicon)):
            start = match.end()
    words_before = len(sentence[start : span.mask_start].split())
    for match in breaks:
        words_after = len(sentence[span.mask_end : match.start()].split())
        if match.start() >= span.mask_end and words_before + words_after >= MIN_CLAUSE_WORDS:
            return start, match.start()
    return start, len(sentence)


def _strip_clause_start(text: str) -> str:
    words = re.sub(r"^\(?\d+[.)]? (?=[a-z])", "", text).split(" ")
    while words and words[0].strip('",').lower() in DISCOURSE_MARKERS:
        words = words[1:]
    return " ".join(words).lstrip(' ",')


def form_question(sentence: str, span: AnswerSpan, lexicon: Lexicon) -> tuple[str, int] | None:
    """Turn the cloze of ``span`` into a question; return it with a quality score, or ``None`` if unusable."""
    clause_start, clause_end = _clause_bounds(sentence, span, lexicon)
    left = _strip_clause_start(sentence[clause_start : span.mask_start].strip())
    right = re.sub(r"(\W+(and|or|but|that|which))+$", "", sentence[span.mask_end : clause_end]).strip(" .!?;:,-\"'")
    right = "" if re.match(r"(and|but|or)\b", right) else right  # 'I did [X] and settled on ...': keep one clause
    arranged = _arrange(left, right, span.wh, lexicon, clause_start == 0)
    return None if arranged is None else _clean_question(arranged[0], sentence[span.start : span.end], arranged[1])


def _arrange(left: str, right: str, wh: str, lexicon: Lexicon, initial: bool) -> tuple[str, int] | None:
    """Order the question: a subject question, wh-fronting, or (short clauses only) the wh-phrase in place."""
    if not left and _starts_with_verb(right, lexicon, finite=True):
        return f"{wh} {right}", SUBJECT_SCORE
    if not left:
        # An adverbial answer opens the clause: 'In 1858, Mary appeared ...' -> 'When did Mary appear ...'.
        fronted = _wh_first(right, "", wh, lexicon, initial=False)
        return None if fronted is None else (fronted, INVERTED_SCORE)
    # An answer followed by a verb ends a long subject ('Pay raises for the city's [4,000] managers would ...').
    fronted = None if _starts_with_verb(right, lexicon) else _wh_first(left, right, wh, lexicon, initial)
    if fronted is not None:
        return fronted, INVERTED_SCORE
    return (f"{left} {wh} {right}", IN_PLACE_SCORE) if _short_simple(left, right) else None


def _short_simple(left: str, right: str) -> bool:
    """Whether an in-place question stays readable: a short left part without clause punctuation, a short tail."""
    return len(left.split()) <= MAX_IN_PLACE_LEFT and not re.search(r"[,;:()]", left) and len(right.split()) <= 8


def _clean_question(text: str, answer: str, score: int) -> tuple[str, int] | None:
    """Drop quotes, fix spacing, capitalise, add '?'; reject questions of bad length or that give the answer away."""
    text = re.sub(r"(?<!\w)'|'(?!\w)", "", text.replace('"', ""))
    text = re.sub(r"\s+", " ", text.replace("( ", "(").replace(" )", ")")).strip(" ,;:-")
    text = re.sub(r" ([,;:])", r"\1", text).rstrip(" ,;:-")
    text = text if re.search(r"\b[A-Z]\.$", text) else text.rstrip(".")  # keep the period of 'F.B.I.'
    if not text or text.count("(") != text.count(")") or re.search(r", (who|what|where|when)\b,", text):
        return None  # unbalanced, or an apposition ('The agent, who, first complained')
    question = text[0].upper() + text[1:] + "?"
    words = [word for word in question.split() if any(char.isalnum() for char in word)]
    if not MIN_QUESTION_WORDS <= len(words) <= MAX_QUESTION_WORDS or answer.lower() in question.lower():
        return None
    return question, score


def questions_for_sentence(sentence: str, index: int, lexicon: Lexicon) -> list[Question]:
    """Return every usable question about ``sentence`` (none for sentences too short, too long, or questions)."""
    words = sentence.split()
    if not MIN_SENTENCE_WORDS <= len(words) <= MAX_SENTENCE_WORDS or sentence.rstrip('"').endswith("?"):
        return []
    if sum(word.isalpha() and word.islower() for word in words) < 3:
        return []  # headlines, signatures, datelines
    questions = []
    for span in answer_spans(sentence, lexicon):
        formed = form_question(sentence, span, lexicon)
        if formed is not None:
            questions.append(Question(formed[0], span, index, formed[1]))
    return questions


# --- contexts and examples ----------------------------------------------------------------------------------------


def context_window(
    sentences: Sequence[str], center: int, rng: random.Random, excluded: int | None = None
) -> tuple[int, int] | None:
    """Pick a window [first, last) of whole sentences around ``center`` of 60-120 words, never ``excluded``."""
    budget = rng.randint(MIN_CONTEXT_WORDS, MAX_CONTEXT_WORDS)
    first, last = center, center + 1
    words = len(sentences[center].split())
    if words > MAX_CONTEXT_WORDS:
        return None
    while True:
        options = []
        if first > 0 and first - 1 != excluded and words + len(sentences[first - 1].split()) <= budget:
            options.append(first - 1)
        if last < len(sentences) and last != excluded and words + len(sentences[last].split()) <= budget:
            options.append(last)
        if not options:
            return first, last
        chosen = rng.choice(options)
        words += len(sentences[chosen].split())
        first, last = min(first, chosen), max(last, chosen + 1)


def _example(
    document: DocumentLike, question: Question, window: tuple[int, int], answer_at: tuple[int, int], suffix: str = ""
) -> QAExample:
    """Make the example whose answer is at ``answer_at`` (sentence index, offset), checking the offset."""
    sentences = document.sentences
    answer = sentences[question.sentence_index][question.span.start : question.span.end]
    answer_sentence, start = answer_at
    context = " ".join(sentences[window[0] : window[1]])
    offset = sum(len(sentence) + 1 for sentence in sentences[window[0] : answer_sentence]) + start
    example = QAExample(
        id=f"{document.collection}-{document.id}-{question.sentence_index}{suffix}",
        title=f"{document.collection}_{document.id}",
        question=question.text,
        context=context,
        answer=answer,
        answer_start=offset,
    )
    if context[offset : offset + len(answer)] != answer:
        raise AssertionError(f"answer {answer!r} not at {offset} in the context of {example.id}")
    return example


def _recurrence(sentences: Sequence[str], question: Question) -> tuple[int, int] | None:
    """Find the answer text again (as whole words) in another sentence; return (sentence index, offset)."""
    answer = sentences[question.sentence_index][question.span.start : question.span.end]
    pattern = re.compile(rf"(?<!\w){re.escape(answer)}(?!\w)")
    for index, sentence in enumerate(sentences):
        match = pattern.search(sentence) if index != question.sentence_index else None
        if match is not None:
            return index, match.start()
    return None


def _recurring_example(
    document: DocumentLike, candidates: Sequence[Question], rng: random.Random, rate: float
) -> QAExample | None:
    """A question whose answer is taken at another occurrence, in a context that leaves its own sentence out."""
    eligible = [candidate for candidate in candidates if candidate.span.kind != "noun_phrase"]
    if not eligible or rng.random() >= rate:
        return None
    question = rng.choice(eligible)
    found = _recurrence(document.sentences, question)
    if found is None:
        return None
    window = context_window(document.sentences, found[0], rng, excluded=question.sentence_index)
    return None if window is None else _example(document, question, window, found, "-r")


def _document_rng(seed: int, document: DocumentLike) -> random.Random:
    key = f"{seed}:{document.collection}:{document.id}".encode()
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


def document_examples(
    document: DocumentLike, lexicon: Lexicon, seed: int = 0, recurring_rate: float = 0.5, per_sentence: int = 1
) -> list[QAExample]:
    """Generate one document's examples: up to ``per_sentence`` per sentence that has usable questions (the
    best-scored first, each on a different answer), plus some recurrences."""
    rng = _document_rng(seed, document)
    sentences = document.sentences
    examples = []
    for index, sentence in enumerate(sentences):
        candidates = questions_for_sentence(sentence, index, lexicon)
        if not candidates:
            continue
        shuffled = rng.sample(candidates, len(candidates))  # random order among equal scores
        chosen: list[Question] = []
        for candidate in sorted(shuffled, key=lambda c: -c.score):
            if len(chosen) < per_sentence and all(c.span.start != candidate.span.start for c in chosen):
                chosen.append(candidate)
        for rank, question in enumerate(chosen):
            window = context_window(sentences, index, rng)
            if window is not None:
                suffix = f"-{rank}" if rank else ""
                examples.append(_example(document, question, window, (index, question.span.start), suffix))
        recurring = _recurring_example(document, candidates, rng, recurring_rate)
        if recurring is not None:
            examples.append(recurring)
    return examples


def build_squad(examples: Sequence[QAExample]) -> dict[str, Any]:
    """Assemble examples into SQuAD v1.1 JSON: one article per title, one paragraph per distinct context."""
    articles: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for example in examples:
        paragraphs = articles.setdefault(example.title, {})
        paragraphs.setdefault(example.context, []).append(
            {
                "id": example.id,
                "question": example.question,
                "answers": [{"text": example.answer, "answer_start": example.answer_start}],
            }
        )
    data = [
        {"title": title, "paragraphs": [{"context": context, "qas": qas} for context, qas in paragraphs.items()]}
        for title, paragraphs in articles.items()
    ]
    return {"version": "1.1", "data": data}


def build_qa_dataset(
    documents: Sequence[DocumentLike],
    seed: int = 0,
    lexicon: Lexicon | None = None,
    recurring_rate: float = 0.5,
    per_sentence: int = 1,
) -> dict[str, Any]:
    """Build a SQuAD v1.1 dataset from ``documents``; the lexicon defaults to one learnt from their sentences."""
    if lexicon is None:
        lexicon = build_lexicon(sentence for document in documents for sentence in document.sentences)
    examples = [
        example for doc in documents for example in document_examples(doc, lexicon, seed, recurring_rate, per_sentence)
    ]
    return build_squad(examples)


def validate_squad(dataset: dict[str, Any]) -> int:
    """Check every answer is the exact substring of its context at ``answer_start``; return the question count."""
    count = 0
    for article in dataset["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                for answer in qa["answers"]:
                    start, text = answer["answer_start"], answer["text"]
                    if paragraph["context"][start : start + len(text)] != text:
                        raise ValueError(f"question {qa['id']}: answer {text!r} is not at {start} in its context")
                count += 1
    return count
