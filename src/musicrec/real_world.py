"""``musicrec real-world``: a public real-audio world, built from music that Debian ships.

The synthetic world is the project's default, but its defaults were fitted there. This tool
builds a second world from real, free-licensed recordings, so that every default and claim can
be checked on both. It

1. downloads pinned Debian packages of game soundtracks (``SOURCES``: version and SHA-256
   fixed, verified) with ``apt-get download`` into a cache;
2. takes every music file of at least ``min_track_seconds`` and writes a
   ``excerpt_seconds`` excerpt from the middle of it, mono at ``sample_rate``, as FLAC (a
   preview, as the Million Song Dataset's 30-s clips; FLAC so that a rebuild is byte-identical);
3. describes what can be heard in each excerpt with a few audio descriptors (tempo, brightness,
   loudness, dynamics, noisiness, percussiveness: :func:`audible_descriptors`), computed with
   librosa and deliberately not the log-mel or MFCC frames the models see;
4. simulates listeners with the project's taste model (:mod:`musicrec.taste`), the same one as
   the synthetic world: a user loves a few sources (a soundtrack: its composers and style),
   has milder views on the descriptors, and a hidden part no audio reveals (a source's social
   standing plus the track's own); popularity is heavy-tailed, partly loudness, mostly hidden.

The output is a data folder in the layout of docs/design.md, section 2: ``audio/``, ``plays.tsv``,
``songs.csv`` (title, artist, album, year, source package, licence), ``ATTRIBUTION.md``,
``licences/`` (each package's Debian copyright file) and ``truth/`` (the tastes behind the log).
The same seed and packages give the same folder, byte for byte.

Use it (README "The real-audio world")::

    musicrec real-world --out data/real_world
    dvc exp run -S data.root=data/real_world
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from joblib import Parallel, delayed
from tqdm import tqdm

from musicrec.errors import MusicrecError
from musicrec.io import (
    OUTPUT_MARKER,
    WRITE_FAILURES,
    atomic_path,
    file_digest,
    is_musicrec_output,
    refuse_output_over_inputs,
    refuse_unowned,
    write_json,
)
from musicrec.taste import Taste, draw_listening


@dataclass(frozen=True)
class Source:
    """A Debian package that ships music, pinned.

    ``music`` is a regular expression on the paths inside the package (``./usr/share/...``);
    the first group, if any, names the album (a soundtrack's part or collection).
    """

    package: str
    version: str
    sha256: str
    artist: str  # who made the music, as the package's copyright file credits it
    year: int  # of the upstream release packaged
    music: str
    album: str  # when the path does not name one


# The album group of a Source's ``music``: one folder name, neither "." nor "..", since the
# album becomes a folder under the extraction's target.
ALBUM_GROUP = r"((?!\.{1,2}(?:/|$))[^/\\]+)"

SOURCES: tuple[Source, ...] = (
    Source(
        "supertux-data",
        "0.6.3-2",
        "a6ad8865972f1dbb5e7b49f4e1b381dd16a68f3028a3502cfeaca2400285d27f",
        "SuperTux contributors",
        2021,
        rf"\./usr/share/games/supertux2/music/{ALBUM_GROUP}/[^/]+\.ogg$",
        "SuperTux",
    ),
    Source(
        "wesnoth-1.16-music",
        "1:1.16.9-1",
        "f9bc3cde92b4ab30db5d7b85f89b4bcc3d788dd92602956d0347250850bf59bb",
        "The Battle for Wesnoth composers",
        2023,
        r"\./usr/share/games/wesnoth/1\.16/data/core/music/[^/]+\.ogg$",
        "The Battle for Wesnoth",
    ),
    Source(
        "warzone2100-music",
        "4.3.3-3",
        "d3b2c9f90ea5438d45d4aff18339a03ec808e1affa9dac91f7dad61cb15ee64e",
        "Warzone 2100 composers",
        2022,
        rf"\./usr/share/games/warzone2100/music/albums/{ALBUM_GROUP}/[^/]+\.opus$",
        "Warzone 2100",
    ),
    Source(
        "hedgewars-data",
        "1.0.2-6",
        "722225903a72604403e6e0026e40e9a6953f47a74d94efc5f55504bc05bb4761",
        "Hedgewars contributors",
        2022,
        r"\./usr/share/games/hedgewars/Data/Music/[^/]+\.ogg$",
        "Hedgewars",
    ),
    Source(
        "marsshooter-data",
        "0.7.6-7",
        "b8d040a9739434f2be96bbf9b38f0743d56d59b853647b2242f9357e38394951",
        "M.A.R.S. contributors",
        2015,
        r"\./usr/share/games/marsshooter/audio/music/[^/]+\.ogg$",
        "M.A.R.S.",
    ),
    Source(
        "openclonk-data",
        "8.1-3",
        "1505314b47196c5052caf75e870ea2cf36bdb4e1d0c7e3f133da93815b7e642f",
        "OpenClonk contributors",
        2018,
        r"\./usr/share/games/openclonk/Music\.ocg/[^/]+\.ogg$",
        "OpenClonk",
    ),
    Source(
        "extremetuxracer-data",
        "0.8.2-1",
        "8ce6c82e6fb89549d284f43f6c4b0a9d82e6c0e5da753bee0ef419276a21470c",
        "Extreme Tux Racer contributors",
        2022,
        r"\./usr/share/games/etr/music/[^/]+\.ogg$",
        "Extreme Tux Racer",
    ),
    Source(
        "lincity-ng-data",
        "2.9~git20150314-5",
        "8f5e85bd42879abdc7099b035d7a3d7468eceb6b93b52a12270c28f3f3c792f9",
        "LinCity-NG contributors",
        2015,
        rf"\./usr/share/games/lincity-ng/music/{ALBUM_GROUP}/[^/]+\.ogg$",
        "LinCity-NG",
    ),
)


@dataclass(frozen=True)
class RealWorldConfig:
    """The knobs of the real-audio world (``musicrec real-world --help``)."""

    seed: int = 7
    n_users: int = 3000
    mean_songs_per_user: float = 15.0  # distinct songs a user plays (log-normal around it)
    audio_share: float = 0.5  # share of taste the descriptors and sources explain
    taste_sharpness: float = 2.5
    popularity_spread: float = 1.3
    hidden_dims: int = 8
    excerpt_seconds: float = 30.0
    sample_rate: int = 22050
    min_track_seconds: float = 30.0  # shorter files (jingles, stings) are left out

    def __post_init__(self) -> None:
        if self.n_users < 10 or self.mean_songs_per_user < 3:
            raise MusicrecError("real-world: need n_users >= 10 and mean_songs_per_user >= 3")
        if not 0.0 <= self.audio_share <= 1.0:
            raise MusicrecError("real-world: audio_share must be in [0, 1]")
        if self.excerpt_seconds <= 0 or self.min_track_seconds < self.excerpt_seconds / 2:
            raise MusicrecError(
                "real-world: need excerpt_seconds > 0 and min_track_seconds >= excerpt / 2"
            )

    def taste(self) -> Taste:
        return Taste(
            self.n_users,
            self.mean_songs_per_user,
            self.audio_share,
            self.taste_sharpness,
            self.popularity_spread,
        )


# -- packages ----------------------------------------------------------------------------------
def deb_name(source: Source) -> str:
    """The file name apt-get gives the package (an epoch's colon is written %3a)."""
    return f"{source.package}_{source.version.replace(':', '%3a')}_all.deb"


def fetch(source: Source, cache: Path) -> Path:
    """The package's ``.deb`` in ``cache``, downloaded with ``apt-get download`` if absent,
    and checked against its pinned SHA-256."""
    cache.mkdir(parents=True, exist_ok=True)
    deb = cache / deb_name(source)
    if not deb.exists():
        if shutil.which("apt-get") is None:
            raise MusicrecError(
                f"real-world: no apt-get here to download {source.package}; download "
                f"{deb.name} from a Debian mirror into {cache} and run again"
            )
        done = subprocess.run(
            ["apt-get", "download", f"{source.package}={source.version}"],
            cwd=cache,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or not deb.exists():
            raise MusicrecError(
                f"real-world: apt-get could not download {source.package} {source.version} "
                f"({done.stderr.strip()[-300:]}); check the network and `apt-get update`, or "
                f"put {deb.name} into {cache}"
            )
    found = file_digest(deb)
    if found != source.sha256:
        raise MusicrecError(
            f"real-world: {deb} has SHA-256 {found}, not the pinned {source.sha256}: it is "
            "another build of the package, and the world would not be the documented one; "
            "delete it and download again"
        )
    return deb


def extract_music(deb: Path, source: Source, target: Path) -> list[tuple[Path, str, str]]:
    """Copy the package's music files and its copyright file (``target/copyright``, when the
    package holds it rather than a link to another package's) out of ``deb`` into ``target``.

    Returns
    -------
    list of (extracted path, album, path in the package), in the package's path order.
    """
    pattern = re.compile(source.music)
    tracks = []
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as p:
        with tarfile.open(fileobj=p.stdout, mode="r|") as archive:
            for member in archive:
                match = pattern.fullmatch(member.name)
                is_copyright = member.name == f"./usr/share/doc/{source.package}/copyright"
                if not member.isfile() or not (match or is_copyright):
                    continue
                out = target / ("copyright" if is_copyright else Path(member.name).name)
                if match and match.groups():
                    out = target / match.group(1) / Path(member.name).name
                # An album of ".." (a pattern looser than ALBUM_GROUP's) would write outside.
                if not out.resolve().is_relative_to(target.resolve()):
                    raise MusicrecError(
                        f"real-world: {deb} holds {member.name!r}, which would be extracted "
                        f"outside {target}; name the album in {source.package}'s music pattern "
                        "with ALBUM_GROUP (one folder name, never '..')"
                    )
                out.parent.mkdir(parents=True, exist_ok=True)
                with archive.extractfile(member) as data, open(out, "wb") as f:
                    shutil.copyfileobj(data, f)
                if match:
                    album = match.group(1) if match.groups() else source.album
                    tracks.append((out, album, member.name.removeprefix(".")))
    if p.returncode != 0:
        raise MusicrecError(f"real-world: dpkg-deb could not read {deb}; delete it and rerun")
    return sorted(tracks)


# -- audio -------------------------------------------------------------------------------------
def middle_excerpt(path: Path, cfg: RealWorldConfig) -> np.ndarray | None:
    """``cfg.excerpt_seconds`` from the middle of a file, mono at ``cfg.sample_rate``
    [shape=(n_samples,), float32]; None for a file shorter than ``cfg.min_track_seconds``."""
    import soxr

    info = sf.info(str(path))
    if info.duration < cfg.min_track_seconds:
        return None
    length = min(cfg.excerpt_seconds, info.duration)
    start = (info.duration - length) / 2
    y, sr = sf.read(
        str(path),
        start=int(start * info.samplerate),
        frames=int(length * info.samplerate),
        dtype="float32",
        always_2d=True,
    )
    y = y.mean(axis=1)
    if sr != cfg.sample_rate:
        y = soxr.resample(y, sr, cfg.sample_rate, quality="HQ")
    return np.clip(y, -1.0, 1.0).astype(np.float32)


# Fewer songs leave the splits (cold, warm, validation) nothing to hold out.
MIN_SONGS = 10

DESCRIPTORS = (
    "log_tempo",
    "brightness",
    "bandwidth",
    "loudness_db",
    "dynamics_db",
    "noisiness",
    "percussiveness",
    "zero_crossings",
)


def audible_descriptors(y: np.ndarray, sr: int) -> np.ndarray:
    """What a listener hears in a clip, as ``DESCRIPTORS`` [shape=(8,), float64].

    Log tempo (librosa's beat tracker), log spectral centroid and bandwidth, mean and standard
    deviation of the frame loudness in dB, spectral flatness, mean onset strength and the
    zero-crossing rate: broad properties of the sound, not the frames the models learn from.
    """
    import librosa

    onset = librosa.onset.onset_strength(y=y, sr=sr)
    tempo = float(np.atleast_1d(librosa.feature.tempo(onset_envelope=onset, sr=sr))[0])
    rms_db = librosa.amplitude_to_db(librosa.feature.rms(y=y)[0] + 1e-6)
    return np.array(
        [
            np.log(max(tempo, 30.0)),
            np.log(librosa.feature.spectral_centroid(y=y, sr=sr).mean() + 1.0),
            np.log(librosa.feature.spectral_bandwidth(y=y, sr=sr).mean() + 1.0),
            rms_db.mean(),
            rms_db.std(),
            librosa.feature.spectral_flatness(y=y).mean(),
            onset.mean(),
            librosa.feature.zero_crossing_rate(y).mean(),
        ]
    )


def _excerpt_and_describe(path: Path, out: Path, cfg: RealWorldConfig) -> np.ndarray | None:
    y = middle_excerpt(path, cfg)
    if y is None:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, suffix=".flac") as tmp:
        sf.write(str(tmp), y, cfg.sample_rate, subtype="PCM_16", format="FLAC")
    return audible_descriptors(y, cfg.sample_rate)


# -- the world ---------------------------------------------------------------------------------
def simulate_listening(
    songs: pd.DataFrame, descriptors: np.ndarray, cfg: RealWorldConfig
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The play log of ``cfg.n_users`` listeners over ``songs`` (``source`` column) described
    by ``descriptors`` [shape=(n_songs, len(DESCRIPTORS))], with the shared taste model.

    The audible description is the source as one-hot groups (a listener loves a few
    soundtracks) followed by the standardised descriptors; hidden factors are the source's
    standing plus the track's own; popularity is partly loudness.
    """
    rng = np.random.default_rng(cfg.seed)
    sources, source_of_song = np.unique(songs["source"].to_numpy(), return_inverse=True)
    z = (descriptors - descriptors.mean(0)) / (descriptors.std(0) + 1e-9)
    phi = np.hstack([np.eye(len(sources))[source_of_song], z])
    source_hidden = rng.standard_normal((len(sources), cfg.hidden_dims))
    song_hidden = 0.7 * source_hidden[source_of_song] + 0.7 * rng.standard_normal(
        (len(songs), cfg.hidden_dims)
    )
    loudness = z[:, DESCRIPTORS.index("loudness_db")]
    return draw_listening(
        phi,
        len(sources),
        song_hidden,
        0.5 * loudness,
        songs["song_id"].to_numpy(),
        cfg.taste(),
        rng,
    )


def collect_tracks(sources: tuple[Source, ...], cache: Path) -> pd.DataFrame:
    """Every music file of ``sources``, extracted under ``cache/extracted``: one row each with
    ``path``, ``source`` (package), ``album``, ``title``, ``artist``, ``year``,
    ``source_file`` (its path in the package) and ``licence`` (where its terms are)."""
    if shutil.which("dpkg-deb") is None:
        raise MusicrecError(
            "real-world: dpkg-deb is not installed, and it reads the Debian packages the world "
            "is built from: install dpkg (on Debian/Ubuntu it is always there)"
        )
    rows = []
    for source in tqdm(sources, desc="real-world: packages", unit="package"):
        deb = fetch(source, cache / "debs")
        target = cache / "extracted" / source.package
        if target.is_dir() and not is_musicrec_output(target):
            # Extracted by a musicrec from before output folders carried a marker: the place
            # (<cache>/extracted/<package>, beside the verified .deb) says whose it is.
            (target / OUTPUT_MARKER).touch()
        # Extracted again, whole or not at all: never a stale or partial copy.
        with atomic_path(target) as tmp:
            tmp.mkdir()
            try:
                extracted = extract_music(deb, source, tmp)
            except (tarfile.TarError, OSError) as exc:
                if isinstance(exc, OSError) and exc.errno in WRITE_FAILURES:
                    raise  # a full disk, not a bad package: atomic_path says so
                raise MusicrecError(
                    f"real-world: {deb} is not a readable Debian package ({exc}); delete it "
                    "and run again to download it anew"
                ) from exc
        extracted = [(target / path.relative_to(tmp), *rest) for path, *rest in extracted]
        licence = (
            f"licences/{source.package}.copyright"
            if (target / "copyright").exists()
            else f"/usr/share/doc/{source.package}/copyright in Debian"
        )
        for path, album, member in extracted:
            rows.append(
                {
                    "path": path,
                    "source": source.package,
                    "album": album,
                    "title": path.stem.replace("_", " "),
                    "artist": source.artist,
                    "year": source.year,
                    "source_file": member,
                    "licence": licence,
                }
            )
    return pd.DataFrame(rows)


def build_world(
    tracks: pd.DataFrame,
    out_dir: Path,
    cfg: RealWorldConfig,
    copyrights: dict[str, Path],
    n_jobs: int = 1,
) -> dict:
    """Write the world's folder from ``tracks`` (as :func:`collect_tracks` returns them),
    atomically: a killed build leaves no half-written world."""
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        (tmp / "audio").mkdir(parents=True)
        ids = [f"R{i:04d}" for i in range(len(tracks))]
        described = Parallel(n_jobs=n_jobs)(
            delayed(_excerpt_and_describe)(path, tmp / "audio" / f"{song_id}.flac", cfg)
            for path, song_id in tqdm(
                list(zip(tracks["path"], ids, strict=True)),
                desc="real-world: excerpts",
                unit="track",
            )
        )
        keep = np.array([d is not None for d in described])
        if keep.sum() < MIN_SONGS:
            raise MusicrecError(
                f"real-world: only {int(keep.sum())} tracks of at least "
                f"{cfg.min_track_seconds:g} s; lower --min-track-seconds or add sources"
            )
        songs = tracks.assign(song_id=ids)[keep].reset_index(drop=True)
        # Song ids are kept as numbered before the short files were dropped: an id names
        # one file of the packages, whatever the length limit.
        descriptors = np.array([d for d in described if d is not None])
        plays, truth = simulate_listening(songs, descriptors, cfg)
        plays.to_csv(tmp / "plays.tsv", sep="\t", header=False, index=False)
        columns = ["song_id", "title", "artist", "album", "year", "source", "source_file"]
        songs[[*columns, "licence"]].to_csv(tmp / "songs.csv", index=False)
        (tmp / "licences").mkdir()
        for package, path in sorted(copyrights.items()):
            shutil.copy(path, tmp / "licences" / f"{package}.copyright")
        (tmp / "ATTRIBUTION.md").write_text(attribution(songs))
        (tmp / "truth").mkdir()
        np.savez(tmp / "truth" / "ground_truth.npz", **truth)
        pd.DataFrame(descriptors, columns=list(DESCRIPTORS)).assign(
            song_id=songs["song_id"]
        ).to_csv(tmp / "truth" / "descriptors.csv", index=False)
        summary = {
            "songs": len(songs),
            "users": int(plays["user_id"].nunique()),
            "plays": len(plays),
            "sources": songs["source"].value_counts().sort_index().to_dict(),
            "config": asdict(cfg),
        }
        write_json(tmp / "truth" / "summary.json", summary)
    return summary


def attribution(songs: pd.DataFrame) -> str:
    """``ATTRIBUTION.md``: where each recording comes from and under which terms."""
    lines = [
        "# Attribution",
        "",
        "The recordings under `audio/` are **modified** excerpts of music shipped by the Debian",
        "packages below: a 30-s (or shorter) excerpt from the middle of each file, mixed down to",
        "mono, resampled and stored as FLAC. Each package's Debian copyright file, which names",
        "the authors and licences of its files, is in `licences/`. The play log `plays.tsv` is",
        "simulated (musicrec's taste model, `truth/`); it is not anyone's listening data.",
        "",
        "| source package | version | artist | tracks | licences |",
        "|---|---|---|---|---|",
    ]
    versions = {s.package: s.version for s in SOURCES}
    for package, group in songs.groupby("source", sort=True):
        lines.append(
            f"| `{package}` | {versions.get(package, '?')} | {group['artist'].iloc[0]} | "
            f"{len(group)} | {group['licence'].iloc[0]} |"
        )
    lines += ["", "| song_id | source | file |", "|---|---|---|"]
    lines += [
        f"| {row.song_id} | {row.source} | `{row.source_file}` |" for row in songs.itertuples()
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    defaults = RealWorldConfig()
    parser = argparse.ArgumentParser(
        prog="musicrec real-world",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out", type=Path, default=Path("data/real_world"), help="(default: data/real_world)"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(".cache/real_world"),
        help="downloaded packages and extracted files, kept between builds "
        "(default: .cache/real_world)",
    )
    for name, value in asdict(defaults).items():
        parser.add_argument(
            "--" + name.replace("_", "-"), type=type(value), default=value, help=f"({value})"
        )
    parser.add_argument("--n-jobs", type=int, default=2, help="processes for the excerpts (2)")
    args = parser.parse_args(argv)
    cfg = RealWorldConfig(**{k: getattr(args, k) for k in asdict(defaults)})
    refuse_output_over_inputs(args.out, {"--cache": args.cache}, either_way=True)
    refuse_unowned(args.out)  # before the downloads, not after
    tracks = collect_tracks(SOURCES, args.cache)
    copyrights = {
        s.package: args.cache / "extracted" / s.package / "copyright"
        for s in SOURCES
        if (args.cache / "extracted" / s.package / "copyright").exists()
    }
    summary = build_world(tracks, args.out, cfg, copyrights, args.n_jobs)
    print(
        f"real-world: {summary['songs']} songs from {len(summary['sources'])} packages, "
        f"{summary['users']} listeners, {summary['plays']} (user, song) pairs -> {args.out}"
    )
    return 0
