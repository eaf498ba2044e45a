"""Tests for the plain-text parallel corpus layout and the LibreOffice help corpus."""

import hashlib
import io
import os
import shutil
import tarfile

import pytest

from conftest import with_fields
from tx_jax.data import libreoffice
from tx_jax.data.text_files import load_text_files, write_text_files
from tx_jax.errors import ConfigError, DataError

HELP = "usr/share/libreoffice/help"

EN_PAGE = """<!DOCTYPE html><html><head><title>T</title></head><body>
<p dir="auto">LibreOffice 7.4 Help</p>
<h1 id="hd_1" dir="auto">
<a name="x"></a>Entering   Formulas
</h1>
<p id="par_1" class="paragraph">To hide the <span class="menuitem">Formula Bar</span>,
  unmark the menu item.</p>
<p id="par_2">Fish &amp; chips<br/>second line</p>
<p id="par_3">Same in both</p>
<p id="par_4"></p>
<p id="par_5">Only in English</p>
<p id="par_dup">First copy</p>
<p id="par_dup">Second copy</p>
<p id="par_6">Outer <p>inner without id</p> tail</p>
</body></html>
"""

DE_PAGE = """<!DOCTYPE html><html><head><title>T</title></head><body>
<p dir="auto">LibreOffice 7.4 Hilfe</p>
<h1 id="hd_1" dir="auto"><a name="x"></a>Eingeben von Formeln</h1>
<p id="par_1" class="paragraph">Sie können die <span class="menuitem">Rechenleiste</span>
ausblenden, indem Sie diesen Menüeintrag deaktivieren.</p>
<p id="par_2">Fisch &amp; Pommes<br>zweite Zeile</p>
<p id="par_3">Same in both</p>
<p id="par_4">Nur Deutsch, Englisch leer</p>
<p id="par_dup">Erste Kopie</p>
<p id="par_dup">Zweite Kopie</p>
<p id="par_6">Außen <p>innen ohne id</p> Ende</p>
</body></html>
"""

EXPECTED_PAIRS = [
    ("Entering Formulas", "Eingeben von Formeln"),
    ("To hide the Formula Bar, unmark the menu item.",
     "Sie können die Rechenleiste ausblenden, indem Sie diesen Menüeintrag deaktivieren."),
    ("Fish & chips second line", "Fisch & Pommes zweite Zeile"),
    ("First copy", "Erste Kopie"),
    ("Second copy", "Zweite Kopie"),
    ("Outer inner without id tail", "Außen innen ohne id Ende"),
]


# ----------------------------------------------------------------------------- text files


def test_text_files_round_trip(tmp_path):
  pairs = {"train": [("a b", "x y"), ("line\nbreak", "Zeile\r\nUmbruch"), ("ünï", "çødé")],
           "validation": [("v", "w")],
           "test": [("t", "u")]}
  write_text_files(str(tmp_path), pairs, "en", "de")
  assert sorted(os.listdir(tmp_path)) == sorted(
      f"{s}.{l}" for s in pairs for l in ("en", "de"))
  loaded = load_text_files(str(tmp_path), "en", "de")
  assert loaded["train"] == [("a b", "x y"), ("line break", "Zeile Umbruch"), ("ünï", "çødé")]
  assert loaded["validation"] == [("v", "w")]
  assert loaded["test"] == [("t", "u")]
  assert not [f for f in os.listdir(tmp_path) if "tmp" in f]


def test_text_files_skips_empty_lines_and_strips(tmp_path):
  (tmp_path / "train.en").write_text("one \n\n three\r\nfour\n", encoding="utf-8")
  (tmp_path / "train.fr").write_text("un\ndeux\ntrois  \n   \n", encoding="utf-8")
  loaded = load_text_files(str(tmp_path), "en", "fr", splits=("train",))
  assert loaded == {"train": [("one", "un"), ("three", "trois")]}


def test_text_files_missing_file_names_it(tmp_path):
  (tmp_path / "train.en").write_text("a\n", encoding="utf-8")
  with pytest.raises(DataError) as e:
    load_text_files(str(tmp_path), "en", "de", splits=("train",))
  assert str(tmp_path / "train.de") in str(e.value)
  assert "one sentence per line" in str(e.value)


def test_text_files_line_count_mismatch_names_both_files(tmp_path):
  (tmp_path / "test.en").write_text("a\nb\nc\n", encoding="utf-8")
  (tmp_path / "test.de").write_text("a\nb\n", encoding="utf-8")
  with pytest.raises(DataError) as e:
    load_text_files(str(tmp_path), "en", "de", splits=("test",))
  message = str(e.value)
  assert str(tmp_path / "test.en") in message and str(tmp_path / "test.de") in message
  assert "3 lines" in message and "has 2" in message


# ----------------------------------------------------------------------------- .deb handling


def _ar_archive(members):
  """An `ar` archive as written by GNU ar: global header, 60-byte headers, even padding."""
  out = io.BytesIO()
  out.write(b"!<arch>\n")
  for name, data in members:
    header = (f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}").encode() + b"`\n"
    assert len(header) == 60
    out.write(header + data + (b"\n" if len(data) % 2 else b""))
  return out.getvalue()


def _tar_xz(files):
  out = io.BytesIO()
  with tarfile.open(fileobj=out, mode="w:xz") as tar:
    for name, text in files.items():
      data = text.encode("utf-8")
      info = tarfile.TarInfo("./" + name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return out.getvalue()


def _write_deb(path, help_dir_name, pages):
  files = {f"{HELP}/{help_dir_name}/text/{page}": text for page, text in pages.items()}
  files[f"{HELP}/{help_dir_name}/langnames.js"] = "not html"
  files[f"{HELP}/{help_dir_name}/text/shared/notes.txt"] = "not html either"
  files[f"usr/share/doc/libreoffice-help-{help_dir_name.lower()}/copyright"] = "MPL"
  with open(path, "wb") as f:
    f.write(_ar_archive([("debian-binary", b"2.0\n"),
                         ("control.tar.xz", b"odd-sized control"),  # Exercises the padding.
                         ("data.tar.xz", _tar_xz(files))]))


def test_read_ar_member(tmp_path):
  path = tmp_path / "x.deb"
  path.write_bytes(_ar_archive([("a", b"odd"), ("bb.txt", b"12"), ("data.tar.xz", b"xyz")]))
  assert libreoffice.read_ar_member(str(path), "data.tar") == ("data.tar.xz", b"xyz")
  assert libreoffice.read_ar_member(str(path), "bb") == ("bb.txt", b"12")
  with pytest.raises(DataError, match="no control.tar"):
    libreoffice.read_ar_member(str(path), "control.tar")
  (tmp_path / "bad.deb").write_bytes(b"<html>not found</html>")
  with pytest.raises(DataError, match="not a .deb"):
    libreoffice.read_ar_member(str(tmp_path / "bad.deb"), "data.tar")


def test_extract_and_align_from_a_real_deb(tmp_path):
  _write_deb(tmp_path / "en.deb", "en-US", {"scalc/guide/page.html": EN_PAGE,
                                            "only_en.html": EN_PAGE})
  _write_deb(tmp_path / "de.deb", "de", {"scalc/guide/page.html": DE_PAGE})
  root = tmp_path / "extracted"
  assert libreoffice.extract_help_html(str(tmp_path / "en.deb"), "en-US", str(root)) == 2
  assert libreoffice.extract_help_html(str(tmp_path / "de.deb"), "de", str(root)) == 1
  extracted = sorted(os.path.relpath(os.path.join(d, f), root)
                     for d, _, fs in os.walk(root) for f in fs)
  assert extracted == [f"{HELP}/de/text/scalc/guide/page.html",
                       f"{HELP}/en-US/text/only_en.html",
                       f"{HELP}/en-US/text/scalc/guide/page.html"]
  pairs = libreoffice.align_help_pages(str(root), "de")
  assert pairs == {"text/scalc/guide/page.html": EXPECTED_PAIRS}


def test_align_requires_both_languages(tmp_path):
  os.makedirs(tmp_path / HELP / "en-US" / "text")
  with pytest.raises(DataError, match=f"{HELP}/fr/text does not exist"):
    libreoffice.align_help_pages(str(tmp_path), "fr")


# ----------------------------------------------------------------------------- splits


def _bucket(page):
  return int(hashlib.md5(page.encode()).hexdigest(), 16) % 100


def test_split_pages_by_page_and_without_leakage():
  names = [f"text/p{i}.html" for i in range(200)]
  train_pages = [n for n in names if _bucket(n) < 50][:3]
  val_pages = [n for n in names if 50 <= _bucket(n) < 75][:2]
  test_pages = [n for n in names if _bucket(n) >= 75][:2]
  pairs_by_page = {
      train_pages[0]: [("a", "A"), ("b", "B"), ("a", "A")],
      train_pages[1]: [("b", "B"), ("c", "C")],
      train_pages[2]: [("c", "C2")],
      val_pages[0]: [("a", "A"), ("d", "D")],   # "a" is in train: dropped here.
      val_pages[1]: [("e", "E"), ("a", "Ä")],   # Same English, other translation: dropped.
      test_pages[0]: [("d", "D"), ("f", "F")],  # "d" is in validation: dropped here.
      test_pages[1]: [("g", "G"), ("f", "F")],
  }
  splits = libreoffice.split_pages(pairs_by_page, (50, 25, 25))
  assert sorted(splits["train"]) == [("a", "A"), ("b", "B"), ("c", "C"), ("c", "C2")]
  assert sorted(splits["validation"]) == [("d", "D"), ("e", "E")]
  assert sorted(splits["test"]) == [("f", "F"), ("g", "G")]
  # Deterministic, whatever order the pages come in.
  reordered = dict(reversed(list(pairs_by_page.items())))
  assert libreoffice.split_pages(reordered, (50, 25, 25)) == splits


# ----------------------------------------------------------------------------- loading


def _fake_apt(calls, unable_first=False):
  """Stands in for apt-get: `download` writes tiny real .debs into the working directory."""
  debs = {"libreoffice-help-en-us": ("en-US", EN_PAGE), "libreoffice-help-de": ("de", DE_PAGE)}
  state = {"updated": not unable_first}

  class Result:
    def __init__(self, returncode, stderr=""):
      self.returncode, self.stderr = returncode, stderr

  def apt_get(args, cwd):
    calls.append(list(args))
    if args[0] == "update":
      state["updated"] = True
      return Result(0)
    if not state["updated"]:
      return Result(100, f"E: Unable to locate package {args[1]}")
    missing = [p for p in args[1:] if p not in debs]
    if missing:
      return Result(100, f"E: Unable to locate package {missing[0]}")
    for package in args[1:]:
      help_dir_name, page = debs[package]
      _write_deb(os.path.join(cwd, f"{package}_4%3a7.4.7-1_all.deb"), help_dir_name,
                 {"shared/page.html": page})
    return Result(0)
  return apt_get


def test_load_fetches_extracts_aligns_and_caches(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(libreoffice, "_apt_get", _fake_apt(calls))
  cache = tmp_path / "cache"
  splits = libreoffice.load_libreoffice_help(str(cache), "de")
  assert calls == [["download", "libreoffice-help-en-us", "libreoffice-help-de"]]
  assert sorted(p for s in splits.values() for p in s) == sorted(EXPECTED_PAIRS)
  aligned = cache / "libreoffice_help" / "de"
  assert sorted(os.listdir(aligned)) == sorted(
      f"{s}.{l}" for s in ("train", "validation", "test") for l in ("en", "de"))
  # The second call reads the cache only: no fetch, no .debs or extracted pages needed.
  shutil.rmtree(cache / "libreoffice_help" / "extracted")
  shutil.rmtree(cache / "libreoffice_help" / "debs")
  assert libreoffice.load_libreoffice_help(str(cache), "de") == splits
  assert len(calls) == 1


def test_load_runs_apt_get_update_as_root(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(libreoffice, "_apt_get", _fake_apt(calls, unable_first=True))
  monkeypatch.setattr(os, "geteuid", lambda: 0)
  splits = libreoffice.load_libreoffice_help(str(tmp_path / "cache"), "de")
  assert [c[0] for c in calls] == ["download", "update", "download"]
  assert sum(len(s) for s in splits.values()) == len(EXPECTED_PAIRS)


def test_load_asks_non_root_to_update(tmp_path, monkeypatch):
  calls = []
  monkeypatch.setattr(libreoffice, "_apt_get", _fake_apt(calls, unable_first=True))
  monkeypatch.setattr(os, "geteuid", lambda: 1000)
  with pytest.raises(DataError, match="sudo apt-get update"):
    libreoffice.load_libreoffice_help(str(tmp_path / "cache"), "de")
  assert [c[0] for c in calls] == ["download"]


def test_load_without_apt_get_explains_libreoffice_dir(tmp_path, monkeypatch):
  def missing(args, cwd):
    raise FileNotFoundError("apt-get")
  monkeypatch.setattr(libreoffice, "_apt_get", missing)
  with pytest.raises(DataError, match="config.libreoffice_dir") as e:
    libreoffice.load_libreoffice_help(str(tmp_path / "cache"), "de")
  assert "dpkg -x" in str(e.value)


def test_load_from_extracted_dir_skips_fetch(tmp_path, monkeypatch):
  def no_apt(args, cwd):
    raise AssertionError("must not fetch")
  monkeypatch.setattr(libreoffice, "_apt_get", no_apt)
  for lang, page in (("en-US", EN_PAGE), ("de", DE_PAGE)):
    os.makedirs(tmp_path / "dir" / HELP / lang / "text")
    (tmp_path / "dir" / HELP / lang / "text" / "p.html").write_text(page, encoding="utf-8")
  splits = libreoffice.load_libreoffice_help(str(tmp_path / "cache"), "de", (80, 10, 10),
                                             extracted_dir=str(tmp_path / "dir"))
  assert sorted(p for s in splits.values() for p in s) == sorted(EXPECTED_PAIRS)
  assert os.path.isdir(tmp_path / "cache" / "libreoffice_help" / "de_split_80_10_10")


def test_load_rejects_bad_split_percent(tmp_path):
  with pytest.raises(ConfigError, match="summing to 100"):
    libreoffice.load_libreoffice_help(str(tmp_path), "de", (90, 5, 4))


@pytest.mark.slow
def test_real_libreoffice_help_de(tmp_path):
  if not shutil.which("apt-get"):
    pytest.skip("needs apt-get")
  splits = libreoffice.load_libreoffice_help(str(tmp_path), "de")
  sizes = {s: len(p) for s, p in splits.items()}
  assert sum(sizes.values()) > 30000 and min(sizes.values()) > 300, sizes
  english = {s: {en for en, _ in p} for s, p in splits.items()}
  assert not english["train"] & english["validation"]
  assert not english["train"] & english["test"]
  assert not english["validation"] & english["test"]
  # Every pair comes from a page of its own split: pages never cross splits.
  pairs_by_page = libreoffice.align_help_pages(str(tmp_path / "libreoffice_help" / "extracted"),
                                               "de")
  page_pairs = {s: set() for s in splits}
  for page, pairs in pairs_by_page.items():
    b = _bucket(page)
    page_pairs["train" if b < 94 else "validation" if b < 97 else "test"].update(pairs)
  for s, pairs in splits.items():
    assert set(pairs) <= page_pairs[s], s


def test_vocabulary_mistakes_name_the_fix_that_helps(tmp_path, libreoffice_pairs):
  from tx_jax.data import tokenizer
  german = [de for _, de in libreoffice_pairs["train"][:300]]
  with pytest.raises(DataError, match="No training text to train the vocabulary .* every line was skipped"):
    tokenizer.train_or_load(str(tmp_path / "empty.model"), [], 100)
  # Too few pieces for German's characters: raise it (the message said "lower" whichever way it failed).
  with pytest.raises(ConfigError, match=r"config.vocab_size=20 .* raise config.vocab_size"):
    tokenizer.train_or_load(str(tmp_path / "small.model"), german, 20)
  with pytest.raises(ConfigError, match=r"config.vocab_size=50000 .* lower config.vocab_size"):
    tokenizer.train_or_load(str(tmp_path / "large.model"), german, 50000)
  (tmp_path / "spm.vocab").write_text("<pad>\t0\n")  # the vocabulary listing beside a model, not the model
  for path in (tmp_path / "spm.vocab", tmp_path):
    with pytest.raises(DataError, match="is not a SentencePiece .model file"):
      tokenizer.load(str(path))


def test_a_data_cache_that_cannot_be_made_is_one_error(tmp_path, small_corpus_dir, vocab_dir):
  from conftest import make_tiny_config
  from tx_jax import tasks
  from tx_jax.data import cache_lock
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  config = make_tiny_config(small_corpus_dir, vocab_dir, data_cache_dir=str(blocker / "cache"))  # under a file
  with pytest.raises(DataError, match="point config.data_cache_dir at a writable directory"):
    tasks.get(config).records(config, "train")
  with pytest.raises(DataError, match=r"a_file/cache cannot be written .*point config.data_cache_dir"):
    with cache_lock.held(str(blocker / "cache"), "fetch"):
      pass


def test_a_language_apt_has_no_help_in_is_named_not_blamed_on_stale_lists(tmp_path, monkeypatch):
  monkeypatch.setattr(libreoffice, "help_languages_apt_knows", lambda: {"de", "en-us", "zh-cn", "zh-tw"})
  for uid, apt_calls in ((0, ["download", "update", "download"]), (1000, ["download"])):
    calls = []
    monkeypatch.setattr(libreoffice, "_apt_get", _fake_apt(calls, unable_first=True))
    monkeypatch.setattr(os, "geteuid", lambda uid=uid: uid)
    with pytest.raises(DataError, match=r"apt knows no LibreOffice help in 'zh' .*it has de, en-us, zh-cn, zh-tw\. "
                                        r"Set the corpus's other language"):
      libreoffice.load_libreoffice_help(str(tmp_path / "cache"), "zh")
    assert [c[0] for c in calls] == apt_calls  # root updates its lists first: they may be what is stale
  monkeypatch.setattr(libreoffice, "help_languages_apt_knows", set)  # no lists at all: they are what is missing
  monkeypatch.setattr(os, "geteuid", lambda: 1000)
  with pytest.raises(DataError, match="sudo apt-get update"):
    libreoffice.load_libreoffice_help(str(tmp_path / "cache"), "zh")


def test_rebuilt_libreoffice_pairs_are_read_anew_not_from_the_old_records(tmp_path):
  """The prepared records are keyed by the aligned files, so files rebuilt (say from another libreoffice_dir) count."""
  from configs import default
  from tx_jax.data import sources
  config = default.get_config()
  config.update(dataset="libreoffice_help", source_language="de", target_language="en", data_cache_dir=str(tmp_path))
  aligned = str(tmp_path / "libreoffice_help" / "de")  # where libreoffice.aligned_dir keeps them
  reader = sources.reader(config)
  for version in ("first", "rebuilt"):
    write_text_files(aligned, {split: [(f"{version} {split} {i}", f"{version} de {i}") for i in range(3)]
                               for split in ("train", "validation", "test")}, "en", "de")
    assert reader.pairs(config, "train")[0] == {"source": f"{version} de 0", "target": f"{version} train 0"}
    config.target_language, config.source_language = "en", ""  # the English side's texts, of the en-de pairs
    assert reader.texts(config, "validation")[2] == {"text": f"{version} validation 2"}
    config.source_language = "de"
  os.remove(os.path.join(aligned, "test.de"))  # a damaged cache: one line naming the file and the fix
  with pytest.raises(DataError, match=r"Missing corpus file .*test.de\. .*delete .*libreoffice_help/de to have it"):
    reader.pairs(config, "test")


def test_language_models_of_two_languages_never_share_a_cached_vocabulary():
  """The key of a LibreOffice LM's vocabulary is the language it reads, not the pair a translation config left."""
  from configs import default, lm_default
  from tx_jax import tasks
  lm = lm_default.get_config()
  english, german = (tasks.get(lm).vocab_path(with_fields(lm, source_language=s, target_language=t))
                     for s, t in (("de", "en"), ("en", "de")))
  assert english != german  # the same "de-en" key before: the second LM trained read the first one's vocabulary
  assert english == tasks.get(lm).vocab_path(lm)  # lm_default's key (source_language="") is kept
  translation = default.get_config()
  assert tasks.get(translation).vocab_path(translation).endswith("libreoffice_help_de-en_8000.model")  # unchanged
