"""English <-> X sentence pairs aligned from the LibreOffice help (Debian packages, MPL-2.0).

Pipeline, each step cached under <cache_dir>/libreoffice_help/:
  debs/       `apt-get download libreoffice-help-en-us libreoffice-help-<lang>`
  extracted/  usr/share/libreoffice/help/{en-US,<lang>}/text/**/*.html, read from
              each .deb's data.tar.xz in Python (no dpkg needed)
  <lang>/     {train,validation,test}.{en,<lang>}, the aligned pairs (text_files layout)
The same help page in both languages carries the same `<p id=...>`/`<hN id=...>`
elements, so paragraphs align by (relative file path, element id).
"""

import glob
import hashlib
import html.parser
import io
import os
import shutil
import subprocess
import tarfile
from typing import Sequence

from absl import logging

from tx_jax.data import cache_lock
from tx_jax.data.text_files import load_text_files, write_text_files
from tx_jax.errors import ConfigError, DataError

Pair = tuple[str, str]

SPLITS = ("train", "validation", "test")
_HELP_PREFIX = "usr/share/libreoffice/help/"
_ALIGNED_TAGS = frozenset(["p", "h1", "h2", "h3", "h4", "h5", "h6"])


def _help_dir_name(language: str) -> str:
  """'de' -> 'de', 'pt-br' -> 'pt-BR': the directory name used inside the packages."""
  parts = language.split("-")
  return "-".join([parts[0].lower()] + [p.upper() for p in parts[1:]])


def _how_to_extract_by_hand(language: str) -> str:
  return (f"To use the help files without fetching here, run `apt-get download "
          f"libreoffice-help-en-us libreoffice-help-{language.lower()}` where apt works, "
          f"`dpkg -x FILE.deb DIR` for both, and set config.libreoffice_dir=DIR (a directory "
          f"containing {_HELP_PREFIX}{{en-US,{_help_dir_name(language)}}}/text/...).")


# ----------------------------------------------------------------------------- fetch


def _apt_get(args: list[str], cwd: str) -> subprocess.CompletedProcess:
  return subprocess.run(["apt-get"] + args, cwd=cwd, capture_output=True, text=True,
                        check=False)


def help_languages_apt_knows() -> set:
  """The languages of the libreoffice-help-* packages in apt's package lists (empty without lists or apt)."""
  try:
    result = subprocess.run(["apt-cache", "pkgnames", "libreoffice-help-"], capture_output=True, text=True,
                            check=False)
  except FileNotFoundError:
    return set()
  names = {line.strip()[len("libreoffice-help-"):] for line in result.stdout.splitlines() if line.strip()}
  return names - {"common"}


def _unable_to_locate(result) -> bool:
  return result.returncode != 0 and "Unable to locate package" in result.stderr


def fetch_debs(debs_dir: str, packages: Sequence[str], language: str) -> None:
  """Runs `apt-get download PACKAGES` in debs_dir (and `apt-get update` first if root needs it)."""
  os.makedirs(debs_dir, exist_ok=True)
  logging.info("Fetching %s with `apt-get download` into %s.", " ".join(packages), debs_dir)
  try:
    result = _apt_get(["download", *packages], debs_dir)
    if _unable_to_locate(result) and os.geteuid() == 0:
      logging.info("apt-get cannot locate the packages; running `apt-get update` (as root) "
                   "to fill the package lists, then retrying.")
      _apt_get(["update"], debs_dir)
      result = _apt_get(["download", *packages], debs_dir)
    if _unable_to_locate(result):
      known = help_languages_apt_knows()
      if known and language.lower() not in known:  # lists with other help packages: the language code is the mistake
        raise DataError(f"apt knows no LibreOffice help in {language!r} (no package libreoffice-help-"
                        f"{language.lower()}); it has {', '.join(sorted(known))}. Set the corpus's other language "
                        "(config.source_language or config.target_language, beside en) to one of them"
                        + (" (or, if apt's lists are stale, run `sudo apt-get update` first)." if os.geteuid() != 0
                           else "."))
      if os.geteuid() != 0:
        raise DataError(
            f"apt-get cannot find {' '.join(packages)}: the apt package lists are empty or "
            f"stale. Run `sudo apt-get update` once, then try again. "
            f"{_how_to_extract_by_hand(language)}")
  except FileNotFoundError as e:
    raise DataError(f"apt-get is not available to fetch {' '.join(packages)}. "
                    f"{_how_to_extract_by_hand(language)}") from e
  if result.returncode != 0:
    stderr = result.stderr.strip().splitlines()
    raise DataError(
        f"`apt-get download {' '.join(packages)}` failed (exit {result.returncode}): "
        f"{' / '.join(stderr[-3:])}. Check that libreoffice-help-{language.lower()} exists "
        f"(`apt-cache search libreoffice-help`). {_how_to_extract_by_hand(language)}")


# ----------------------------------------------------------------------------- extract


def read_ar_member(path: str, name_prefix: str) -> tuple[str, bytes]:
  """Returns (name, data) of the first member of an `ar` archive (.deb) named name_prefix*."""
  with open(path, "rb") as f:
    if f.read(8) != b"!<arch>\n":
      raise DataError(f"{path} is not a .deb (ar) archive; delete it so it is fetched again.")
    while header := f.read(60):
      if len(header) < 60 or header[58:60] != b"`\n":
        break
      name = header[:16].decode("ascii").strip().rstrip("/")  # GNU ar ends names with '/'.
      size = int(header[48:58].decode("ascii").strip())
      if name.startswith(name_prefix):
        return name, f.read(size)
      f.seek(size + size % 2, io.SEEK_CUR)  # Members are padded to an even offset.
  raise DataError(f"{path} has no {name_prefix}* member; delete it so it is fetched again.")


def extract_help_html(deb_path: str, help_dir_name: str, dest_root: str) -> int:
  """Extracts usr/share/libreoffice/help/<help_dir_name>/text/**/*.html of a .deb to dest_root."""
  name, data = read_ar_member(deb_path, "data.tar")
  if not name.endswith((".tar", ".tar.gz", ".tar.xz", ".tar.bz2")):
    raise DataError(f"{deb_path} stores its files as {name}, which Python's tarfile cannot "
                    f"read. Extract it with `dpkg -x {deb_path} DIR` and set "
                    f"config.libreoffice_dir=DIR.")
  final_dir = os.path.join(dest_root, _HELP_PREFIX, help_dir_name)
  partial_root = os.path.join(dest_root, f".partial-{help_dir_name}-{os.getpid()}")
  wanted = f"{_HELP_PREFIX}{help_dir_name}/text/"
  count = 0
  with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
    for member in tar:
      path = member.name.removeprefix("./")
      if not (member.isfile() and path.startswith(wanted) and path.endswith(".html")
              and ".." not in path.split("/")):
        continue
      out_path = os.path.join(partial_root, path)
      os.makedirs(os.path.dirname(out_path), exist_ok=True)
      with open(out_path, "wb") as out:
        shutil.copyfileobj(tar.extractfile(member), out)
      count += 1
  if not count:
    raise DataError(f"{deb_path} contains no {wanted}**/*.html; is it a libreoffice-help package?")
  # Move the whole language directory in one step: an interrupted run leaves no half tree.
  os.makedirs(os.path.dirname(final_dir), exist_ok=True)
  _move_into_place(os.path.join(partial_root, _HELP_PREFIX, help_dir_name), final_dir)
  shutil.rmtree(partial_root)
  return count


def _move_into_place(partial_dir: str, final_dir: str) -> None:
  """Renames partial_dir to final_dir, unless another process got there first."""
  try:
    os.replace(partial_dir, final_dir)
  except OSError:
    if not os.path.isdir(final_dir):
      raise
    shutil.rmtree(partial_dir)


# ----------------------------------------------------------------------------- align


class _ElementTextParser(html.parser.HTMLParser):
  """Collects the normalised text of every <p id=...> and <hN id=...> element, in document order."""

  def __init__(self):
    super().__init__(convert_charrefs=True)  # Entities arrive unescaped in handle_data.
    self.elements: list[tuple[str, str]] = []  # (id, text)
    self._open: list[tuple[str, str | None, list[str]]] = []  # (tag, id or None, text parts)

  def handle_starttag(self, tag, attrs):
    if tag == "br":
      self.handle_data(" ")
    elif tag in _ALIGNED_TAGS:
      self._open.append((tag, dict(attrs).get("id"), []))

  def handle_endtag(self, tag):
    if not any(open_tag == tag for open_tag, _, _ in self._open):
      return  # A stray end tag.
    while True:  # Also closes elements whose end tag was omitted.
      open_tag, element_id, parts = self._open.pop()
      if element_id:
        self.elements.append((element_id, " ".join("".join(parts).split())))
      if open_tag == tag:
        return

  def handle_data(self, data):
    for _, element_id, parts in self._open:
      if element_id:
        parts.append(data)


def parse_elements(path: str) -> dict[tuple[str, int], str]:
  """Maps (element id, occurrence number) -> text of the <p id>/<hN id> elements of a page."""
  parser = _ElementTextParser()
  with open(path, encoding="utf-8") as f:
    parser.feed(f.read())
  parser.close()
  seen: dict[str, int] = {}
  texts = {}
  for element_id, text in parser.elements:
    seen[element_id] = seen.get(element_id, -1) + 1
    texts[(element_id, seen[element_id])] = text
  return texts


def align_help_pages(root: str, language: str) -> dict[str, list[Pair]]:
  """Maps each text/**/*.html page present in both languages under root to its (en, other) pairs."""
  en_dir = os.path.join(root, _HELP_PREFIX, "en-US")
  other_dir = os.path.join(root, _HELP_PREFIX, _help_dir_name(language))
  for d in (en_dir, other_dir):
    if not os.path.isdir(os.path.join(d, "text")):
      raise DataError(f"{d}/text does not exist. The LibreOffice help directory must contain "
                      f"{_HELP_PREFIX}{{en-US,{_help_dir_name(language)}}}/text/ as made by "
                      f"`dpkg -x FILE.deb DIR` for libreoffice-help-en-us and "
                      f"libreoffice-help-{language.lower()}.")

  def pages(d):
    return {os.path.relpath(p, d) for p in glob.glob(os.path.join(d, "text", "**", "*.html"),
                                                       recursive=True)}

  pairs_by_page = {}
  for page in sorted(pages(en_dir) & pages(other_dir)):
    en_texts = parse_elements(os.path.join(en_dir, page))
    other_texts = parse_elements(os.path.join(other_dir, page))
    pairs_by_page[page] = [(en, other_texts[key]) for key, en in en_texts.items()
                           if key in other_texts and en and other_texts[key]
                           and en != other_texts[key]]
  return pairs_by_page


def split_pages(pairs_by_page: dict[str, list[Pair]],
                split_percent: Sequence[int]) -> dict[str, list[Pair]]:
  """Assigns whole pages to train/validation/test by md5(path) % 100, then removes duplicates."""
  buckets = {split: [] for split in SPLITS}
  for page in sorted(pairs_by_page):
    bucket = int(hashlib.md5(page.encode("utf-8")).hexdigest(), 16) % 100
    split = ("train" if bucket < split_percent[0] else
             "validation" if bucket < split_percent[0] + split_percent[1] else "test")
    buckets[split].extend(pairs_by_page[page])
  # Exact duplicate pairs are dropped within a split; a pair whose English side occurs
  # in an earlier split (train before validation before test) is dropped from the later one.
  earlier_english: set[str] = set()
  result = {}
  for split in SPLITS:
    unique = list(dict.fromkeys(p for p in buckets[split] if p[0] not in earlier_english))
    earlier_english.update(en for en, _ in unique)
    logging.info("LibreOffice help %s: %d pairs of %d aligned (%d dropped as duplicates or "
                 "as English seen in an earlier split).",
                 split, len(unique), len(buckets[split]), len(buckets[split]) - len(unique))
    result[split] = unique
  return result


# ----------------------------------------------------------------------------- entry point


def aligned_dir(cache_dir: str, language: str = "de", extracted_dir: str | None = None) -> str:
  """The directory of the cached {train,validation,test}.{en,<language>} files, building it on first use."""
  directory = os.path.join(cache_dir, "libreoffice_help", language)
  if not os.path.isdir(directory):
    load_libreoffice_help(cache_dir, language, extracted_dir=extracted_dir)
  return directory


def load_libreoffice_help(cache_dir: str,
                          language: str = "de",
                          split_percent: Sequence[int] = (94, 3, 3),
                          extracted_dir: str | None = None) -> dict[str, list[Pair]]:
  """Returns {split: [(english, other)]} from the LibreOffice help, fetching it on first use.

  Whole help pages go to one split (md5 of the page path), so near-duplicates of
  one page never cross splits; then exact duplicates are removed within each
  split, and validation/test drop any pair whose English side occurs in an
  earlier split (order train, validation, test). extracted_dir, if given, is a
  directory containing usr/share/libreoffice/help/{en-US,<language>}/text/ and
  replaces the apt-get fetch. The aligned pairs are cached as
  <cache_dir>/libreoffice_help/<language>/{train,validation,test}.{en,<language>}
  (directory suffixed _split_A_B_C for a non-default split_percent); delete it to rebuild.
  """
  if len(split_percent) != 3 or sum(split_percent) != 100 or min(split_percent) < 0:
    raise ConfigError(f"split_percent must be three non-negative percentages for "
                      f"train/validation/test summing to 100, got {tuple(split_percent)}.")
  if language.lower() in ("en", "en-us"):
    raise ConfigError("language must be the non-English side of the pairs, e.g. 'de' or 'fr'.")
  base_dir = os.path.join(cache_dir, "libreoffice_help")
  aligned_dir = os.path.join(base_dir, language)
  if tuple(split_percent) != (94, 3, 3):
    aligned_dir += "_split_" + "_".join(str(p) for p in split_percent)
  if os.path.isdir(aligned_dir):
    logging.info("Reading the cached LibreOffice help en-%s pairs from %s.", language, aligned_dir)
    return load_text_files(aligned_dir, "en", language, SPLITS)

  with cache_lock.held(base_dir, "fetch"):  # another process may be fetching it right now (any language)
    if os.path.isdir(aligned_dir):
      return load_text_files(aligned_dir, "en", language, SPLITS)
    if extracted_dir is None:
      extracted_dir = os.path.join(base_dir, "extracted")
      debs_dir = os.path.join(base_dir, "debs")
      todo = {}  # help directory name -> package, for those not extracted yet
      for help_dir_name in ("en-US", _help_dir_name(language)):
        if not os.path.isdir(os.path.join(extracted_dir, _HELP_PREFIX, help_dir_name, "text")):
          todo[help_dir_name] = f"libreoffice-help-{help_dir_name.lower()}"

      def find_deb(package):
        debs = sorted(glob.glob(os.path.join(debs_dir, f"{package}_*.deb")))
        return debs[-1] if debs else None

      missing = [package for package in todo.values() if not find_deb(package)]
      if missing:
        fetch_debs(debs_dir, missing, language)
      for help_dir_name, package in todo.items():
        deb = find_deb(package)
        if deb is None:
          raise DataError(f"`apt-get download {package}` left no {package}_*.deb in {debs_dir}. "
                          f"{_how_to_extract_by_hand(language)}")
        count = extract_help_html(deb, help_dir_name, extracted_dir)
        logging.info("Extracted %d help pages from %s into %s.", count, deb, extracted_dir)

    logging.info("Aligning LibreOffice help pages en-US <-> %s under %s.", language, extracted_dir)
    pairs_by_page = align_help_pages(extracted_dir, language)
    logging.info("Aligned %d pairs (%d unique) from %d pages.",
                 sum(len(p) for p in pairs_by_page.values()),
                 len(set(p for pairs in pairs_by_page.values() for p in pairs)), len(pairs_by_page))
    pairs_by_split = split_pages(pairs_by_page, split_percent)
    # Write the whole directory next to its final place, then rename it in one step.
    partial_dir = f"{aligned_dir}.partial{os.getpid()}"
    write_text_files(partial_dir, pairs_by_split, "en", language)
    _move_into_place(partial_dir, aligned_dir)
    logging.info("Cached the en-%s pairs in %s.", language, aligned_dir)
    return pairs_by_split
