"""Tests for the Kaldi-complete lang directory (asrkit.text.lexicon.write_lang / read_lang /
read_dict_dir) and ``asrkit lang`` on a Kaldi dict dir.

:func:`validate_lang` below re-implements the checks of Kaldi's ``utils/validate_lang.pl``
(symbol tables, ``.txt``/``.int``/``.csl`` correspondence, disjoint phone lists, ``roots``/
``sets`` coverage, ``extra_questions``, ``word_boundary``, ``topo``, word-level disambiguation
symbols, ``oov``, olabel-sorted ``L.fst``/``L_disambig.fst`` and its random word-sequence test
of the word boundaries), plus what the issue asks on top: contiguous ids, ``#0 .. #N``, and that
both lexicon FSTs map every pronunciation of the lexicon to its word. It reads only the files,
never asrkit's objects, and one test checks that it fails on broken directories.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pynini
import pytest

from asrkit.cli import main
from asrkit.models.hmm_gmm.topology import PhoneTopology, Topology
from asrkit.text.lexicon import (
    Lexicon,
    LexiconError,
    make_lang,
    make_lang_from_dict_dir,
    read_dict_dir,
    read_lang,
    write_lang,
)

# Homophones (READ/REED), a prefix pronunciation (A is the start of AN... and of ABOUT),
# a one-phone word, a silence phone inside a word, and a word with two pronunciations.
LEXICON = [
    ("A", ["AH"]), ("A", ["EY"]), ("AN", ["AH", "N"]), ("ABOUT", ["AH", "B", "AW", "T"]),
    ("READ", ["R", "IY", "D"]), ("REED", ["R", "IY", "D"]), ("READ", ["R", "EH", "D"]),
    ("TEA", ["T", "IY"]), ("HMM", ["HH", "SIL", "M"]), ("DOT", ["D", "AA", "T"]),
]

_WB_TYPES = {"begin", "end", "internal", "singleton", "nonword"}


def _write(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return path


# --- a re-implementation of utils/validate_lang.pl ----------------------------------------------

def _text_lines(path: Path) -> list[str]:
    """Lines of a lang text file: UTF-8, each ending in '\\n', no CR, no odd whitespace."""
    data = path.read_bytes()
    text = data.decode("utf-8")
    assert "\r" not in text, f"{path}: carriage return"
    assert text == "" or text.endswith("\n"), f"{path}: last line lacks a newline"
    lines = text.split("\n")[:-1] if text else []
    for no, line in enumerate(lines, 1):
        assert re.search(r"[^\S \t]", line) is None, f"{path}:{no}: whitespace other than space"
    return lines


def _symbol_table(path: Path) -> dict[str, int]:
    table: dict[str, int] = {}
    for no, line in enumerate(_text_lines(path), 1):
        cols = line.split()
        assert len(cols) == 2, f"{path}:{no}: expected 2 columns"
        assert cols[0] not in table, f"{path}:{no}: duplicate symbol"
        table[cols[0]] = int(cols[1])
    ids = list(table.values())
    assert ids == list(range(len(ids))), f"{path}: ids not contiguous from 0 in order"
    assert next(iter(table)) == "<eps>" and table["<eps>"] == 0
    return table


def _check_txt_int_csl(base: Path, psym: dict[str, int]) -> list[str]:
    txt = [line.split() for line in _text_lines(base.with_suffix(".txt"))]
    assert all(len(c) == 1 for c in txt), f"{base}.txt: expected 1 column"
    syms = [c[0] for c in txt]
    ints = _text_lines(base.with_suffix(".int"))
    assert ints == [str(psym[s]) for s in syms], f"{base}.int does not match {base}.txt"
    csl = _text_lines(base.with_suffix(".csl"))
    assert len(csl) == 1, f"{base}.csl: expected 1 line"
    assert csl[0].split(":") == [str(psym[s]) for s in syms], f"{base}.csl does not match"
    return syms


def _check_txt_int(base: Path, psym: dict[str, int], *, roots: bool = False,
                   boundary: bool = False) -> list[list[str]]:
    txt = _text_lines(base.with_suffix(".txt"))
    ints = _text_lines(base.with_suffix(".int"))
    assert len(txt) == len(ints), f"{base}: .txt and .int differ in length"
    out = []
    for no, (t, i) in enumerate(zip(txt, ints), 1):
        t_cols, i_cols = t.split(), i.split()
        if roots:
            assert re.match(r"(shared|not-shared) (split|not-split) ", t), f"{base}.txt:{no}"
            assert t_cols[:2] == i_cols[:2], f"{base}.int:{no}"
            t_cols, i_cols = t_cols[2:], i_cols[2:]
        if boundary:
            assert len(t_cols) == 2 and t_cols[1] in _WB_TYPES, f"{base}.txt:{no}: {t!r}"
            assert i_cols[1:] == t_cols[1:], f"{base}.int:{no}"
            t_cols, i_cols = t_cols[:1], i_cols[:1]
        assert i_cols == [str(psym[p]) for p in t_cols], f"{base}.int:{no} does not match"
        out.append(t_cols)
    return out


def _parse_topo(path: Path, pint: dict[int, str]) -> list[tuple[list[str], list[list]]]:
    """``[(phones, states)]`` per ``<TopologyEntry>``; a state is ``[(dest, prob), ...]``."""
    entries, phones, states, in_for = [], [], [], False
    lines = _text_lines(path)
    assert lines[0] == "<Topology>" and lines[-1] == "</Topology>"
    for line in lines[1:-1]:
        if line == "<TopologyEntry>":
            phones, states = [], []
        elif line == "<ForPhones>":
            in_for = True
        elif line == "</ForPhones>":
            in_for = False
        elif line == "</TopologyEntry>":
            entries.append((phones, states))
        elif in_for:
            assert not re.fullmatch(r"<.*>[ ]*", line)
            phones += [pint[int(i)] for i in line.split()]
        else:
            m = re.fullmatch(r"<State> (\d+)(?: <PdfClass> (\d+)((?: <Transition> \d+ \S+)+))? "
                             r"</State>", line)
            assert m is not None, f"{path}: bad line {line!r}"
            assert int(m[1]) == len(states)
            if m[2] is not None:
                assert m[2] == m[1]
                toks = m[3].split()
                states.append([(int(toks[k + 1]), float(toks[k + 2]))
                               for k in range(0, len(toks), 3)])
    return entries


def _phone_sequence(fst: pynini.Fst, word_ids: list[int], seed: int) -> list[int]:
    """validate_lang.pl: compose L with a word sequence, project on phones, take a random
    path, return its non-epsilon phone ids."""
    words = pynini.Fst()
    states = [words.add_state() for _ in range(len(word_ids) + 1)]
    words.set_start(states[0])
    words.set_final(states[-1])
    one = pynini.Weight.one(words.weight_type())
    for k, w in enumerate(word_ids):
        words.add_arc(states[k], pynini.Arc(w, w, one, states[k + 1]))
    composed = pynini.compose(fst, words)
    assert composed.num_states() > 0, f"L does not accept the words {word_ids}"
    path = pynini.randgen(composed.project("input"), npath=1, seed=seed)
    labels, state = [], path.start()
    while path.num_arcs(state):
        arc = next(iter(path.arcs(state)))
        if arc.ilabel:
            labels.append(arc.ilabel)
        state = arc.nextstate
    return labels


def _check_word_boundaries(fst: pynini.Fst, wsym: dict[str, int], wb: dict[int, str],
                           disambig: set[int], rng: random.Random) -> None:
    """validate_lang.pl's test: a random word sequence through L gives a phone sequence from
    which word_boundary.int recovers the number of words."""
    transition = {}
    for x in ("bos", "nonword", "end", "singleton"):
        transition.update({(x, "nonword"): 0, (x, "begin"): 1, (x, "singleton"): 1,
                           (x, "eos"): 0})
    transition.update({("begin", "end"): 0, ("begin", "internal"): 0,
                       ("internal", "internal"): 0, ("internal", "end"): 0})
    candidates = [i for w, i in wsym.items()
                  if i != 0 and w not in ("<s>", "</s>") and not w.startswith("#")]
    for _ in range(5):
        seq = [rng.choice(candidates) for _ in range(rng.randint(1, 12))]
        phones = _phone_sequence(fst, seq, seed=rng.randrange(1 << 30))
        cur, num_words = "bos", 0
        for p in [*phones, "<<eos>>"]:
            if p in disambig:
                continue
            state = "eos" if p == "<<eos>>" else wb[p]
            assert (cur, state) in transition, f"{cur} -> {state} in {phones} for {seq}"
            num_words += transition[cur, state]
            cur = state
        assert num_words == len(seq), f"{num_words} words recovered from {phones} for {seq}"


def _check_lexicon_fst(fst: pynini.Fst, lexicon_path: Path, psym: dict[str, int],
                       wsym: dict[str, int], sil: list[str]) -> None:
    """Every pronunciation of the lexicon file is mapped to its word, alone and twice with the
    optional silence ``sil`` between."""
    fst = fst.copy().arcsort("ilabel")
    for line in _text_lines(lexicon_path):
        word, *pron = line.split()
        ids = [psym[p] for p in pron]
        for phones, expected in ((ids, [wsym[word]]),
                                 (ids + [psym[p] for p in sil] + ids, [wsym[word]] * 2)):
            outputs = {tuple(x for x in o if x) for o in _all_outputs(_compose_ids(phones, fst))}
            assert tuple(expected) in outputs, f"{lexicon_path}: {line!r} not accepted by L"


def _compose_ids(phones: list[int], fst: pynini.Fst) -> pynini.Fst:
    acc = pynini.Fst()
    states = [acc.add_state() for _ in range(len(phones) + 1)]
    acc.set_start(states[0])
    acc.set_final(states[-1])
    one = pynini.Weight.one(acc.weight_type())
    for k, p in enumerate(phones):
        acc.add_arc(states[k], pynini.Arc(p, p, one, states[k + 1]))
    return pynini.compose(acc.arcsort("olabel"), fst)


def _all_outputs(fst: pynini.Fst) -> list[list[int]]:
    """Output label sequences of every path of an acyclic FST."""
    out: list[list[int]] = []

    def walk(state: int, labels: list[int]) -> None:
        if fst.final(state) != pynini.Weight.zero(fst.weight_type()):
            out.append(labels)
        for arc in fst.arcs(state):
            walk(arc.nextstate, [*labels, arc.olabel])

    if fst.start() >= 0:
        walk(fst.start(), [])
    return out


def validate_lang(d: Path, *, seed: int = 0) -> None:
    """Kaldi ``utils/validate_lang.pl`` (see the module docstring); AssertionError on failure."""
    rng = random.Random(seed)
    psym = _symbol_table(d / "phones.txt")
    wsym = _symbol_table(d / "words.txt")
    pint = {i: p for p, i in psym.items()}
    for w in ("#0", "<s>", "</s>"):
        assert w in wsym, f"words.txt lacks {w}"
    ph = d / "phones"
    silence = _check_txt_int_csl(ph / "silence", psym)
    nonsilence = _check_txt_int_csl(ph / "nonsilence", psym)
    disambig = _check_txt_int_csl(ph / "disambig", psym)
    opt = _check_txt_int_csl(ph / "optional_silence", psym)
    assert _check_txt_int_csl(ph / "context_indep", psym) == silence
    assert len(opt) == 1 and opt[0] in silence
    assert silence and nonsilence
    assert not set(silence) & set(nonsilence) and not set(silence) & set(disambig)
    assert not set(disambig) & set(nonsilence)
    assert set(psym) == {"<eps>", *silence, *nonsilence, *disambig}, "unexplained phones"
    # #0 .. #N, contiguous, last in phones.txt
    assert disambig == [f"#{i}" for i in range(len(disambig))] and len(disambig) >= 2
    assert list(psym)[-len(disambig):] == disambig
    real = [*silence, *nonsilence]
    for name in ("roots", "sets"):
        lines = _check_txt_int(ph / name, psym, roots=name == "roots")
        listed = [p for line in lines for p in line]
        assert sorted(listed) == sorted(real), f"{name}.txt must list every phone once"
    assert (ph / "extra_questions.txt").is_file() and (ph / "extra_questions.int").is_file()
    for line in _check_txt_int(ph / "extra_questions", psym):
        assert line and set(line) <= set(real)
    wb: dict[int, str] = {}
    if (ph / "word_boundary.txt").exists():
        lines = _check_txt_int(ph / "word_boundary", psym, boundary=True)
        typed = [line.split() for line in _text_lines(ph / "word_boundary.txt")]
        assert sorted(p for p, _ in typed) == sorted(real), "word_boundary must cover phones"
        for p, t in typed:
            suffix = {"_B": "begin", "_E": "end", "_I": "internal", "_S": "singleton"}
            assert t == suffix.get(p[-2:], "nonword")
            wb[psym[p]] = t
        assert len(lines) == len(real)
    # topo: every silence and non-silence phone once, nothing else
    topo_phones = []
    for line in _text_lines(d / "topo"):
        if not re.fullmatch(r"<.*>[ ]*", line):
            topo_phones += [pint[int(i)] for i in line.split()]
    assert len(topo_phones) == len(set(topo_phones)), "topo lists a phone twice"
    assert set(topo_phones) == set(real), "topo must cover exactly the real phones"
    for _, states in _parse_topo(d / "topo", pint):
        for row in states:
            assert abs(sum(p for _, p in row) - 1.0) < 1e-6
    # word-level disambiguation symbols
    wd = _text_lines(ph / "wdisambig.txt")
    assert wd == ["#0"]
    assert _text_lines(ph / "wdisambig_words.int") == [str(wsym[s]) for s in wd]
    assert _text_lines(ph / "wdisambig_phones.int") == [str(psym[s]) for s in wd]
    # oov
    oov = _text_lines(d / "oov.txt")
    assert len(oov) == 1 and _text_lines(d / "oov.int") == [str(wsym[oov[0]])]
    # align_lexicon: WORD WORD PHONES, ids via words.txt and phones.txt, sorted, with <eps> SIL
    al_txt = _text_lines(ph / "align_lexicon.txt")
    al_int = _text_lines(ph / "align_lexicon.int")
    assert len(al_txt) == len(al_int)
    assert al_txt == sorted(set(al_txt), key=lambda s: s.encode())
    assert f"<eps> <eps> {opt[0]}" in al_txt
    for t, i in zip(al_txt, al_int):
        w1, w2, *pr = t.split()
        assert w1 == w2 and pr
        assert i.split() == [str(wsym[w1]), str(wsym[w2]), *(str(psym[p]) for p in pr)]
    # L.fst, L_disambig.fst
    for name, lex in (("L.fst", "lexicon.txt"), ("L_disambig.fst", "lexicon_disambig.txt")):
        fst = pynini.Fst.read(str(d / name))
        assert fst.arc_type() == "standard"
        assert fst.properties(pynini.O_LABEL_SORTED, True) == pynini.O_LABEL_SORTED
        assert fst.input_symbols() is None and fst.output_symbols() is None
        if wb:
            _check_word_boundaries(fst, wsym, wb, {psym[p] for p in disambig}, rng)
        if (d / lex).is_file():
            sil = [opt[0], disambig[-1]] if name == "L_disambig.fst" else opt
            _check_lexicon_fst(fst, d / lex, psym, wsym, sil)
    lfst = pynini.Fst.read(str(d / "L_disambig.fst"))
    loops = [a for s in lfst.states() for a in lfst.arcs(s)
             if a.ilabel == psym["#0"] and a.olabel == wsym["#0"] and a.nextstate == s]
    assert len(loops) == 1, "L_disambig.fst needs one #0:#0 self-loop (fstaddselfloops)"


# --- write_lang ----------------------------------------------------------------------------------

@pytest.fixture
def lang():
    lex = Lexicon()
    for k, (w, p) in enumerate(LEXICON):
        lex.add(w, p, 0.5 if k == 6 else 1.0)  # one pronunciation probability below 1
    return make_lang(lex, silence_phones=("SIL", "NSN"))


def test_written_lang_passes_validate_lang(lang, tmp_path):
    d = write_lang(lang, tmp_path / "lang")
    validate_lang(d)
    wanted = ["topo", "L.fst", "L_disambig.fst", "oov.int", "phones/roots.txt",
              "phones/sets.int", "phones/extra_questions.txt", "phones/context_indep.csl",
              "phones/word_boundary.int", "phones/align_lexicon.int",
              "phones/wdisambig_phones.int", "phones/wdisambig_words.int"]
    assert all((d / f).is_file() for f in wanted)


def test_written_lang_follows_prepare_lang_formats(lang, tmp_path):
    d = write_lang(lang, tmp_path / "lang")
    ph = d / "phones"
    roots = (ph / "roots.txt").read_text().splitlines()
    assert roots[:3] == ["shared split SIL SIL_B SIL_E SIL_I SIL_S",
                         "shared split NSN NSN_B NSN_E NSN_I NSN_S",
                         "shared split SPN SPN_B SPN_E SPN_I SPN_S"]
    assert "shared split AA_B AA_E AA_I AA_S" in roots
    sets = (ph / "sets.txt").read_text().splitlines()
    assert [f"shared split {s}" for s in sets] == roots
    assert (ph / "context_indep.txt").read_text() == (ph / "silence.txt").read_text()
    wb = dict(line.split() for line in (ph / "word_boundary.txt").read_text().splitlines())
    assert wb["SIL"] == "nonword" and wb["SIL_S"] == "singleton" and wb["AH_B"] == "begin"
    assert wb["IY_I"] == "internal" and wb["T_E"] == "end"
    questions = (ph / "extra_questions.txt").read_text().splitlines()
    nonsil = [p for p in lang.phone_set.base_phones if p not in ("SIL", "NSN", "SPN")]
    assert questions == [*(" ".join(p + s for p in nonsil) for s in ("_B", "_E", "_I", "_S")),
                         *(" ".join(p + s for p in ("SIL", "NSN", "SPN"))
                           for s in ("", "_B", "_E", "_I", "_S"))]
    phones = dict(line.split() for line in (d / "phones.txt").read_text().splitlines())
    assert (ph / "silence.csl").read_text() == ":".join(
        phones[p] for p in (ph / "silence.txt").read_text().split()) + "\n"
    assert (d / "oov.txt").read_text() == "<UNK>\n"
    words = dict(line.split() for line in (d / "words.txt").read_text().splitlines())
    assert (d / "oov.int").read_text() == words["<UNK>"] + "\n"
    align = (ph / "align_lexicon.txt").read_text().splitlines()
    assert "HMM HMM HH_B SIL_I M_E" in align and "<eps> <eps> SIL" in align
    assert "READ READ R_B EH_I D_E" in align and "<UNK> <UNK> SPN_S" in align
    assert len(align) == lang.lexicon.num_prons + 1
    # topo: gen_topo.pl 3 5 (non-silence entry first) with the phones' ids
    topo = (d / "topo").read_text().splitlines()
    assert topo[:4] == ["<Topology>", "<TopologyEntry>", "<ForPhones>",
                        (ph / "nonsilence.int").read_text().replace("\n", " ").strip()]
    assert topo[5] == ("<State> 0 <PdfClass> 0 <Transition> 0 0.75 <Transition> 1 0.25 "
                       "</State>")
    assert topo[8:10] == ["<State> 3 </State>", "</TopologyEntry>"]
    assert topo[12] == (ph / "silence.int").read_text().replace("\n", " ").strip()
    assert topo[14] == ("<State> 0 <PdfClass> 0 <Transition> 0 0.25 <Transition> 1 0.25 "
                        "<Transition> 2 0.25 <Transition> 3 0.25 </State>")
    assert topo[-3:] == ["<State> 5 </State>", "</TopologyEntry>", "</Topology>"]


def test_topo_matches_the_topology_asrkit_trains_with(lang, tmp_path):
    topology = Topology(silence=PhoneTopology.left_to_right(3, 0.5))
    d = write_lang(lang, tmp_path / "lang", topology=topology)
    pint = {i: p for p, i in lang.phones.items()}
    entries = _parse_topo(d / "topo", pint)
    assert [set(p) for p, _ in entries] == [set(lang.phone_set.nonsilence),
                                           set(lang.phone_set.silence)]
    for (_, states), topo in zip(entries, (topology.nonsilence, topology.silence)):
        assert [tuple(map(tuple, row)) for row in states] == [tuple(r) for r in
                                                              topo.transitions]
    default = _parse_topo(write_lang(lang, tmp_path / "d", fsts=False) / "topo", pint)
    assert [tuple(map(tuple, r)) for r in default[1][1]] == list(
        Topology().silence.transitions)


def test_lang_fsts_map_pronunciations_to_words(lang, tmp_path):
    d = write_lang(lang, tmp_path / "lang")
    L = pynini.Fst.read(str(d / "L.fst"))
    Ld = pynini.Fst.read(str(d / "L_disambig.fst"))
    p, w = lang.phones, lang.words
    # Homophones READ/REED: L maps R_B IY_I D_E to both, L_disambig tells them apart.
    ids = [p["R_B"], p["IY_I"], p["D_E"]]
    assert {tuple(x for x in o if x) for o in _all_outputs(_compose_ids(ids, L))} == {
        (w["READ"],), (w["REED"],)}
    for word, disamb in (("READ", "#1"), ("REED", "#2")):
        out = _all_outputs(_compose_ids([*ids, p[disamb]], Ld))
        assert {tuple(x for x in o if x) for o in out} == {(w[word],)}
    # The prefix A (AH_S) is not a prefix in the position-dependent lexicon: no #1 needed;
    # the optional silence is followed by the last disambiguation symbol in L_disambig.
    assert lang.lexicon_disambig["A"] == [("AH_S",), ("EY_S",)]
    last = lang.phone_set.disambig[-1]
    out = _all_outputs(_compose_ids([p["SIL"], p[last], p["AH_S"]], Ld))
    assert {tuple(x for x in o if x) for o in out} == {(w["A"],)}
    assert not _all_outputs(_compose_ids([p["SIL"], p["AH_S"]], Ld))


def test_lang_without_position_dependence_passes_validate_lang(tmp_path):
    lang = make_lang(Lexicon(LEXICON), position_dependent=False)
    d = write_lang(lang, tmp_path / "lang")
    validate_lang(d)
    assert not (d / "phones" / "word_boundary.txt").exists()  # as prepare_lang.sh
    assert (d / "phones" / "extra_questions.txt").read_text() == ""
    assert (d / "phones" / "roots.txt").read_text().splitlines()[0] == "shared split SIL"
    back = read_lang(d)
    assert back == lang and back.sets == lang.sets and back.extra_questions == ()


def test_validate_lang_catches_broken_dirs(lang, tmp_path):
    """The checks are real: each corruption below must fail."""
    def broken(edit) -> None:
        d = write_lang(lang, tmp_path / "lang")
        edit(d)
        with pytest.raises(AssertionError):
            validate_lang(d)

    def replace(path: Path, old: str, new: str) -> None:
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new, 1))

    validate_lang(write_lang(lang, tmp_path / "lang"))
    broken(lambda d: replace(d / "phones" / "silence.int", "2\n", "3\n"))
    broken(lambda d: replace(d / "phones" / "disambig.csl", ":", " "))
    broken(lambda d: replace(d / "phones" / "sets.txt", "SIL_S\n", "\n"))
    broken(lambda d: replace(d / "phones" / "roots.txt", "shared split ", ""))
    broken(lambda d: replace(d / "phones" / "word_boundary.txt", "SIL_B begin", "SIL_B end"))
    broken(lambda d: replace(d / "topo", "\n1 ", "\n"))
    broken(lambda d: (d / "oov.int").write_text("0\n"))
    broken(lambda d: replace(d / "words.txt", "#0 ", "#0 9"))
    broken(lambda d: (d / "L_disambig.fst").write_bytes((d / "L.fst").read_bytes()))
    broken(lambda d: pynini.Fst.read(str(d / "L.fst")).arcsort("ilabel").write(
        str(d / "L.fst")))


def test_write_lang_is_atomic_and_old_lang_dirs_still_read(lang, tmp_path):
    d = write_lang(lang, tmp_path / "lang")
    assert not list(d.rglob(".*.tmp"))
    # An asrkit lang dir from before this change: only the old files.
    old = {"phones.txt", "words.txt", "oov.txt", "lexicon.txt", "lexicon_disambig.txt",
           "lexiconp.txt", "lexiconp_disambig.txt", "phones/silence.txt",
           "phones/nonsilence.txt", "phones/optional_silence.txt", "phones/disambig.txt"}
    for f in list(d.rglob("*")):
        if f.is_file() and f.relative_to(d).as_posix() not in old:
            f.unlink()
    back = read_lang(d)
    assert back == lang and back.sets == lang.sets
    assert back.extra_questions == lang.extra_questions  # the defaults, re-derived
    validate_lang(write_lang(back, tmp_path / "again"))


# --- Kaldi dict dir -> asrkit lang -> read_lang ---------------------------------------------------

def _kaldi_dict(d: Path, *, probs: bool = False) -> Path:
    """A data/local/dict as Kaldi recipes write it (stress variants on one line)."""
    _write(d / "silence_phones.txt", "SIL\nSPN\nNSN\n")
    _write(d / "optional_silence.txt", "SIL\n")
    _write(d / "nonsilence_phones.txt", "AH AH0 AH1\nB\nD\nEY1\nIY1\nR\nT\nZH\n")
    _write(d / "extra_questions.txt", "SIL SPN NSN\nAH B D R T ZH\nAH0\nAH1 EY1 IY1\n")
    lines = ["<SPOKEN_NOISE> SPN", "!SIL SIL", "A AH0", "A EY1", "BAD B AH1 D", "READ R IY1 D",
             "REED R IY1 D", "TEA T IY1", "<NOISE> NSN", "DEBT D AH T"]
    _write(d / "lexicon.txt", "".join(f"{line}\n" for line in lines))
    if probs:
        _write(d / "lexiconp.txt", "".join(
            f"{w}\t{0.5 if w == 'REED' else 1.0} {' '.join(p)}\n"
            for w, *p in (line.split() for line in lines)))
    return d


def test_dict_dir_round_trip_through_cli(tmp_path, capsys):
    dict_dir = _kaldi_dict(tmp_path / "dict", probs=True)
    out = tmp_path / "lang"
    assert main(["lang", str(dict_dir), str(out), "--oov-word", "<SPOKEN_NOISE>"]) == 0
    assert "phone symbols" in capsys.readouterr().out
    validate_lang(out)
    back = read_lang(out)
    ps = back.phone_set
    assert ps.base_phones == ("SIL", "SPN", "NSN", "AH", "AH0", "AH1", "B", "D", "EY1", "IY1",
                              "R", "T", "ZH")  # the dict's order; ZH although unused
    assert back.oov_word == "<SPOKEN_NOISE>" and "<UNK>" not in back.words
    assert back.lexicon["BAD"] == [("B_B", "AH1_I", "D_E")]
    assert back.lexicon.has_probs and ("READ", 1.0, ("R_B", "IY1_I", "D_E")) in list(
        back.lexicon.prob_entries())
    assert ("REED", 0.5, ("R_B", "IY1_I", "D_E")) in list(back.lexicon.prob_entries())
    sets = (out / "phones" / "sets.txt").read_text().splitlines()
    assert sets[:3] == ["SIL SIL_B SIL_E SIL_I SIL_S", "SPN SPN_B SPN_E SPN_I SPN_S",
                        "NSN NSN_B NSN_E NSN_I NSN_S"]
    assert sets[3] == ("AH_B AH_E AH_I AH_S AH0_B AH0_E AH0_I AH0_S "
                       "AH1_B AH1_E AH1_I AH1_S")  # one line of nonsilence_phones.txt
    assert back.sets == tuple(tuple(s.split()) for s in sets)
    questions = (out / "phones" / "extra_questions.txt").read_text().splitlines()
    assert questions[0] == ("SIL SIL_B SIL_E SIL_I SIL_S SPN SPN_B SPN_E SPN_I SPN_S "
                            "NSN NSN_B NSN_E NSN_I NSN_S")
    assert questions[2] == "AH0_B AH0_E AH0_I AH0_S"
    assert questions[3] == ("AH1_B AH1_E AH1_I AH1_S EY1_B EY1_E EY1_I EY1_S IY1_B IY1_E "
                            "IY1_I IY1_S")
    assert questions[4] == "AH_B AH0_B AH1_B B_B D_B EY1_B IY1_B R_B T_B ZH_B"
    assert back.extra_questions == tuple(tuple(q.split()) for q in questions)
    # Re-writing what was read gives the same files.
    again = write_lang(back, tmp_path / "again")
    for f in sorted(out.rglob("*")):
        if f.is_file():
            assert (again / f.relative_to(out)).read_bytes() == f.read_bytes(), f


def test_dict_dir_lexicon_txt_only_and_library_calls(tmp_path):
    dict_dir = _kaldi_dict(tmp_path / "dict")
    dd = read_dict_dir(dict_dir)
    assert dd.lexicon_path.name == "lexicon.txt" and not dd.lexicon.has_probs
    assert dd.silence_phones == (("SIL",), ("SPN",), ("NSN",))
    assert dd.nonsilence_phones[0] == ("AH", "AH0", "AH1")
    assert dd.extra_questions[2:] == (("AH0",), ("AH1", "EY1", "IY1"))
    lang = make_lang_from_dict_dir(dd, oov_word="<UNK>", oov_phone="SPN",
                                   position_dependent=False)
    assert lang.lexicon["<UNK>"] == [("SPN",)]
    assert lang.sets[3] == ("AH", "AH0", "AH1")
    assert lang.extra_questions == dd.extra_questions
    validate_lang(write_lang(lang, tmp_path / "lang"))


@pytest.mark.parametrize("edit, match", [
    (lambda d: (d / "optional_silence.txt").unlink(),
     r"dict/optional_silence\.txt: file not found; expected one line"),
    (lambda d: _write(d / "optional_silence.txt", "AH\n"),
     r"optional_silence\.txt:1: phone 'AH' is not in silence_phones\.txt"),
    (lambda d: _write(d / "optional_silence.txt", "SIL\nSPN\n"),
     r"optional_silence\.txt:2: expected exactly one line with one phone"),
    (lambda d: _write(d / "lexicon.txt", "A AH0\nB B XX\n"),
     (r"lexicon\.txt:2: phone 'XX' of word 'B' is not in silence_phones\.txt or "
      r"nonsilence_phones\.txt")),
    (lambda d: _write(d / "lexicon.txt", "A AH0\n<s> SIL\n"),
     r"lexicon\.txt:2: forbidden word '<s>'"),
    (lambda d: _write(d / "nonsilence_phones.txt", "AH\nB\nSIL\n"),
     (r"nonsilence_phones\.txt:3: phone 'SIL' is listed twice \(first in "
      r"silence_phones\.txt line 1\)")),
    (lambda d: _write(d / "nonsilence_phones.txt", "AH\n\nB\n"),
     r"nonsilence_phones\.txt:2: empty line"),
    (lambda d: _write(d / "nonsilence_phones.txt", "AH_B\n"),
     r"nonsilence_phones\.txt:1: phone 'AH_B' has a form Kaldi disallows"),
    (lambda d: (d / "silence_phones.txt").unlink(), r"silence_phones\.txt: file not found"),
    (lambda d: _write(d / "extra_questions.txt", "SIL\nAH QQ\n"),
     r"extra_questions\.txt:2: phone 'QQ' is not in"),
    (lambda d: (d / "lexicon.txt").unlink(), r"neither lexicon\.txt nor lexiconp\.txt"),
    (lambda d: _write(d / "extra_questions.txt", "AH AH0 B\nAH1\n"),
     (r"nonsilence_phones\.txt:1: phones 'AH' and 'AH0' share a tree root but no line of "
      r"extra_questions\.txt tells them apart")),
    (lambda d: (d / "extra_questions.txt").unlink(),
     r"nonsilence_phones\.txt:1: phones 'AH' and 'AH0' share a tree root"),
])
def test_bad_dict_dir_errors_name_file_and_line(tmp_path, edit, match):
    d = _kaldi_dict(tmp_path / "dict")
    edit(d)
    with pytest.raises(LexiconError, match=match):
        read_dict_dir(d)


def test_dict_dir_oov_and_lexiconp_mismatch_errors(tmp_path):
    d = _kaldi_dict(tmp_path / "dict", probs=True)
    with pytest.raises(LexiconError, match=r"lexiconp\.txt: lacks the OOV word '<UNK>'"):
        make_lang_from_dict_dir(d)
    with pytest.raises(LexiconError, match=r"oov_phone 'AH' is not in silence_phones"):
        make_lang_from_dict_dir(d, oov_phone="AH")
    text = (d / "lexicon.txt").read_text().replace("BAD B AH1 D", "BAD B AH0 D")
    _write(d / "lexicon.txt", text)
    with pytest.raises(LexiconError, match=r"lexicon\.txt:5: does not match lexiconp\.txt"):
        read_dict_dir(d)
    with pytest.raises(LexiconError, match="not a directory"):
        read_dict_dir(d / "lexicon.txt")


# --- reading a lang dir written by Kaldi's prepare_lang.sh ---------------------------------------

def _kaldi_lang(d: Path, *, position_dependent: bool = True) -> Path:
    """A lang dir as prepare_lang.sh writes it for this dict (by hand, no lexicon.txt):
    silence SIL SPN, non-silence AH B, words !SIL <UNK> AH BAH."""
    suf_sil = ["", "_B", "_E", "_I", "_S"] if position_dependent else [""]
    suf = ["_B", "_E", "_I", "_S"] if position_dependent else [""]
    sil = [p + s for p in ("SIL", "SPN") for s in suf_sil]
    nonsil = [p + s for p in ("AH", "B") for s in suf]
    disambig = ["#0", "#1", "#2", "#3"]  # AH, UH homophones: #1 #2; #3 for optional silence
    phones = ["<eps>", *sil, *nonsil, *disambig]
    _write(d / "phones.txt", "".join(f"{p} {i}\n" for i, p in enumerate(phones)))
    words = ["<eps>", "!SIL", "<UNK>", "AH", "BAH", "UH", "#0", "<s>", "</s>"]
    _write(d / "words.txt", "".join(f"{w} {i}\n" for i, w in enumerate(words)))
    for name, items in (("silence", sil), ("nonsilence", nonsil), ("disambig", disambig),
                        ("optional_silence", ["SIL"]), ("context_indep", sil)):
        _write(d / "phones" / f"{name}.txt", "".join(f"{p}\n" for p in items))
    s = "_S" if position_dependent else ""
    b, e = ("_B", "_E") if position_dependent else ("", "")
    align = [f"!SIL !SIL SIL{s}", f"<UNK> <UNK> SPN{s}", f"AH AH AH{s}",
             f"BAH BAH B{b} AH{e}", f"UH UH AH{s}", "<eps> <eps> SIL"]
    _write(d / "phones" / "align_lexicon.txt", "".join(f"{x}\n" for x in sorted(align)))
    _write(d / "oov.txt", "<UNK>\n")
    sets = [" ".join(p + x for x in suf_sil) for p in ("SIL", "SPN")]
    sets += [" ".join(p + x for x in suf) for p in ("AH", "B")]
    _write(d / "phones" / "sets.txt", "".join(f"{x}\n" for x in sets))
    _write(d / "phones" / "roots.txt", "".join(f"shared split {x}\n" for x in sets))
    _write(d / "phones" / "extra_questions.txt", "SIL SPN\n")
    return d


@pytest.mark.parametrize("position_dependent", [True, False])
def test_read_kaldi_written_lang_dir(tmp_path, position_dependent):
    d = _kaldi_lang(tmp_path / "kaldi", position_dependent=position_dependent)
    lang = read_lang(d)
    ps = lang.phone_set
    assert ps.position_dependent is position_dependent
    assert ps.base_phones == ("SIL", "SPN", "AH", "B") and ps.optional_silence == "SIL"
    assert lang.oov_word == "<UNK>" and lang.words["BAH"] == 4
    pd = position_dependent
    assert lang.lexicon["BAH"] == [("B_B", "AH_E") if pd else ("B", "AH")]
    assert "<eps>" not in lang.lexicon and len(lang.lexicon) == 5
    # AH and UH are homophones: #1 and #2 are recomputed, and fit the dir's #0 .. #3.
    assert lang.lexicon_disambig["AH"] == [("AH_S" if pd else "AH", "#1")]
    assert lang.lexicon_disambig["UH"] == [("AH_S" if pd else "AH", "#2")]
    assert lang.extra_questions == (("SIL", "SPN"),)
    assert lang.sets[0] == (("SIL", "SIL_B", "SIL_E", "SIL_I", "SIL_S") if pd else ("SIL",))
    validate_lang(write_lang(lang, tmp_path / "asrkit"))


def test_read_kaldi_lang_dir_errors(tmp_path):
    d = _kaldi_lang(tmp_path / "kaldi")
    _write(d / "phones" / "disambig.txt", "#0\n#1\n#2\n")
    _write(d / "phones.txt", "".join(
        line + "\n" for line in (d / "phones.txt").read_text().splitlines()[:-1]))
    with pytest.raises(LexiconError, match=r"disambig\.txt: lists #0 to #2, but the lexicon "
                                           r"of align_lexicon\.txt needs #1 to #2 and one more"):
        read_lang(d)

    d = _kaldi_lang(tmp_path / "k2")
    _write(d / "phones" / "sets.txt", "SIL SIL_B SIL_E SIL_I SIL_S\nSPN SPN_B\nAH_B AH_E "
                                      "AH_I AH_S\nB_B B_E B_I B_S SIL\n")
    with pytest.raises(LexiconError, match=r"sets\.txt:4: phone 'SIL' is listed twice"):
        read_lang(d)
    _write(d / "phones" / "sets.txt", "SIL SIL_B SIL_E SIL_I SIL_S\nAH_B AH_E AH_I AH_S\n")
    with pytest.raises(LexiconError, match=r"sets\.txt: lacks the phone\(s\) SPN SPN_B"):
        read_lang(d)
    _write(d / "phones" / "sets.txt", "SIL SIL_B\nXX\n")
    with pytest.raises(LexiconError, match=r"sets\.txt:2: 'XX' is not a silence"):
        read_lang(d)

    d = _kaldi_lang(tmp_path / "k3")
    _write(d / "phones" / "align_lexicon.txt", "AH AH AH_S\nBAH BOO B_B AH_E\n")
    with pytest.raises(LexiconError, match=r"align_lexicon\.txt:2: expected 'WORD WORD"):
        read_lang(d)
    (d / "phones" / "align_lexicon.txt").unlink()
    with pytest.raises(LexiconError, match=r"no lexicon: expected lexicon\.txt"):
        read_lang(d)

    d = _kaldi_lang(tmp_path / "k4")
    _write(d / "phones" / "align_lexicon.txt", "AH AH AH_S\nBAH BAH B_B AH_X\n")
    with pytest.raises(LexiconError, match=r"phone 'AH_X' of word 'BAH' is not a silence"):
        read_lang(d)


def test_make_lang_phone_sets_and_extra_questions():
    import dataclasses

    lang = make_lang(Lexicon(LEXICON), phone_sets=[("AA", "AH")],
                     extra_questions=[("AA", "SIL")])
    v = lang.phone_set.variants
    assert lang.sets[:4] == (v("SIL"), v("SPN"), (*v("AA"), *v("AH")), v("AW"))
    assert len(lang.sets) == len(lang.phone_set.base_phones) - 1
    assert lang.extra_questions[0] == (*v("AA"), *v("SIL"))
    assert lang.extra_questions[1:] == tuple(
        dataclasses.replace(lang, extra_questions=None).extra_questions)
    with pytest.raises(LexiconError, match="phone 'QQ' of phone set 1 is not a silence"):
        make_lang(Lexicon(LEXICON), phone_sets=[("QQ",)])
    with pytest.raises(LexiconError, match="phone 'AA' is in phone sets 1 and 2"):
        make_lang(Lexicon(LEXICON), phone_sets=[("AA",), ("AA", "AH")])
    with pytest.raises(LexiconError, match="phone 'QQ' of extra question 1 is not"):
        make_lang(Lexicon(LEXICON), extra_questions=[("QQ",)])
    with pytest.raises(LexiconError, match=r"sets lacks the phone\(s\) SIL SIL_B"):
        dataclasses.replace(lang, sets=lang.sets[1:])
    with pytest.raises(LexiconError, match="extra_questions line 2: 'AA' is not a silence"):
        dataclasses.replace(lang, extra_questions=(("SIL",), ("AA",)))
