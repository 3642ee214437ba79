"""Stage ``synthesize``: a synthetic music world whose structure is known (docs/design.md, 5).

Songs get audible attributes (style, tempo, key and mode, lead timbre, brightness, energy,
loudness) and are rendered to audio from them; they also get hidden factors (an artist's and the
song's own social and context effects) that no audio reveals. Each user has a taste over the
audible attributes and over the hidden factors; ``audio_share`` sets how much of the taste the
audio explains. Users pick songs by taste and by a heavy-tailed popularity, and play them an
over-dispersed (negative binomial) number of times.

The output is a data folder in the layout of docs/design.md, section 2 (``plays.tsv``, ``audio/``,
``songs.csv``) plus ``truth/`` with what the generator used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from joblib import Parallel, delayed
from tqdm import tqdm

from musicrec.errors import MusicrecError
from musicrec.io import atomic_path, load_params, write_json
from musicrec.stage import DataConfig, Workers, read_config, run_stage, stage_parser
from musicrec.synth_audio import LEAD_TIMBRES, STYLE_NAMES, STYLES, SongAttributes, render_song
from musicrec.taste import BLOCK_CELLS, Taste, draw_listening

SYNTHETIC_ROOT = Path("data/synthetic")


@dataclass(frozen=True)
class WorldConfig:
    """The knobs of a synthetic world (``synthesize`` in params.yaml)."""

    n_songs: int = 2000
    n_users: int = 5000
    mean_songs_per_user: float = 30.0
    clip_seconds: float = 10.0
    sample_rate: int = 22050
    audio_share: float = 0.6
    taste_sharpness: float = 2.5
    popularity_spread: float = 1.3
    hidden_dims: int = 8
    songs_per_artist: int = 8
    seed: int = 7

    def __post_init__(self) -> None:
        if self.n_songs < 10 or self.n_users < 10:
            raise MusicrecError("synthesize: n_songs and n_users must be at least 10")
        if not 0.0 <= self.audio_share <= 1.0:
            raise MusicrecError("synthesize.audio_share must be in [0, 1]")
        if self.clip_seconds <= 0 or self.sample_rate < 8000:
            raise MusicrecError("synthesize: clip_seconds must be > 0 and sample_rate >= 8000")


def audible_features(songs: pd.DataFrame) -> np.ndarray:
    """Encode the audible attributes a taste can weigh.

    Returns
    -------
    phi : np.ndarray [shape=(n_songs, n_styles + n_timbres + 5)]
        One-hot style and lead timbre, then standardised tempo, mode (+1 major, -1 minor),
        brightness, energy and loudness. Key is left out: taste is transposition invariant.
    """
    style = (songs["style"].to_numpy()[:, None] == np.array(STYLE_NAMES)[None, :]).astype(float)
    timbre = songs["lead_timbre"].to_numpy()[:, None] == np.array(LEAD_TIMBRES)[None, :]
    cont = np.column_stack(
        [
            songs["tempo"],
            np.where(songs["mode"] == "major", 1.0, -1.0),
            songs["brightness"],
            songs["energy"],
            songs["loudness"],
        ]
    ).astype(float)
    cont = (cont - cont.mean(0)) / (cont.std(0) + 1e-9)
    return np.hstack([style, timbre.astype(float), cont])


def make_world(
    cfg: WorldConfig, block_cells: int = BLOCK_CELLS
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, np.ndarray]]:
    """Draw songs, users' tastes and the play log.

    Memory grows with users + songs + plays, never with users x songs (see :func:`_draw_listened`).

    Returns
    -------
    songs : pd.DataFrame
        One row per song: ``song_id``, ``title``, ``artist`` and the audible attributes.
    plays : pd.DataFrame
        ``user_id``, ``song_id``, ``play_count`` (int >= 1), one row per (user, song) pair.
    truth : dict of np.ndarray
        The ground truth behind the log, as factors (:func:`affinity` turns them into cells):
        ``taste_audible`` [shape=(n_users, d_a)] and ``song_audible`` [shape=(n_songs, d_a)],
        ``taste_hidden`` [shape=(n_users, hidden_dims)] and ``song_hidden``
        [shape=(n_songs, hidden_dims)], ``moments_audible`` and ``moments_hidden`` (mean and
        standard deviation of each product over all cells), ``popularity`` [shape=(n_songs,)],
        ``audio_share`` and ``taste_sharpness``.
    """
    rng = np.random.default_rng(cfg.seed)
    n_artists = max(1, cfg.n_songs // cfg.songs_per_artist)
    # An artist mostly sticks to one style and sound; songs vary around it.
    artist_style = rng.integers(len(STYLE_NAMES), size=n_artists)
    artist_bright = rng.uniform(0.1, 0.9, n_artists)
    artist_hidden = rng.standard_normal((n_artists, cfg.hidden_dims))
    artist_of_song = rng.integers(n_artists, size=cfg.n_songs)
    keeps_style = rng.random(cfg.n_songs) < 0.85
    style_idx = np.where(
        keeps_style, artist_style[artist_of_song], rng.integers(len(STYLE_NAMES), size=cfg.n_songs)
    )
    styles = np.array(STYLE_NAMES)[style_idx]
    tempo_range = np.array([STYLES[s]["tempo"] for s in STYLE_NAMES])[style_idx]
    tempo = rng.uniform(tempo_range[:, 0], tempo_range[:, 1])
    songs = pd.DataFrame(
        {
            "song_id": [f"S{i:06d}" for i in range(cfg.n_songs)],
            "title": [f"Track {i}" for i in range(cfg.n_songs)],
            "artist": [f"Artist {a}" for a in artist_of_song],
            "style": styles,
            "tempo": tempo.round(1),
            "key": rng.integers(12, size=cfg.n_songs),
            "mode": np.where(rng.random(cfg.n_songs) < 0.55, "major", "minor"),
            "lead_timbre": np.array(LEAD_TIMBRES)[
                rng.integers(len(LEAD_TIMBRES), size=cfg.n_songs)
            ],
            "brightness": np.clip(
                artist_bright[artist_of_song] + rng.normal(0, 0.12, cfg.n_songs), 0, 1
            ).round(3),
            "energy": rng.uniform(0, 1, cfg.n_songs).round(3),
            "loudness": rng.uniform(0, 1, cfg.n_songs).round(3),
        }
    )
    # Hidden song factors: the artist's social standing plus the song's own context effects.
    song_hidden = 0.7 * artist_hidden[artist_of_song] + 0.7 * rng.standard_normal(
        (cfg.n_songs, cfg.hidden_dims)
    )

    # Popularity is heavy-tailed and partly hidden (marketing, charts), partly energy.
    energy = songs["energy"].to_numpy()
    plays, truth = draw_listening(
        audible_features(songs),
        len(STYLE_NAMES),
        song_hidden,
        0.5 * (energy - energy.mean()) / energy.std(),
        songs["song_id"].to_numpy(),
        Taste(
            cfg.n_users,
            cfg.mean_songs_per_user,
            cfg.audio_share,
            cfg.taste_sharpness,
            cfg.popularity_spread,
        ),
        rng,
        block_cells,
    )
    return songs, plays, truth


def _render_and_write(rows: list[dict], audio_dir: Path, cfg: WorldConfig) -> int:
    for row in rows:
        attrs = SongAttributes(**{k: row[k] for k in SongAttributes.__dataclass_fields__})
        y = render_song(attrs, cfg.sample_rate, cfg.clip_seconds, [cfg.seed, row["index"]])
        sf.write(audio_dir / f"{row['song_id']}.flac", y, cfg.sample_rate, subtype="PCM_16")
    return len(rows)


def synthesize_world(cfg: WorldConfig, out_dir: Path, n_jobs: int = 1) -> dict:
    """Write a synthetic data folder (docs/design.md, section 2 layout) to ``out_dir``.

    The folder appears whole or not at all: it is built under a temporary name and renamed.
    Audio is 16-bit FLAC, mono, ``cfg.sample_rate`` Hz, ``cfg.clip_seconds`` long.
    Returns a summary dict (sizes and counts).
    """
    songs, plays, truth = make_world(cfg)
    with atomic_path(Path(out_dir)) as tmp:
        (tmp / "audio").mkdir(parents=True)
        (tmp / "truth").mkdir()
        records = [dict(index=i, **row) for i, row in enumerate(songs.to_dict("records"))]
        chunks = [records[i : i + 25] for i in range(0, len(records), 25)]
        jobs = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
            delayed(_render_and_write)(chunk, tmp / "audio", cfg) for chunk in chunks
        )
        with tqdm(total=len(records), desc="synthesize: rendering songs", unit="song") as bar:
            for done in jobs:
                bar.update(done)
        plays.to_csv(tmp / "plays.tsv", sep="\t", header=False, index=False)
        songs[["song_id", "title", "artist"]].to_csv(tmp / "songs.csv", index=False)
        songs.to_csv(tmp / "truth" / "song_attributes.csv", index=False)
        np.savez_compressed(tmp / "truth" / "ground_truth.npz", **truth)
        (tmp / "truth" / "config.json").write_text(pd.Series(asdict(cfg)).to_json(indent=2))
    return {
        "songs": len(songs),
        "users": int(plays["user_id"].nunique()),
        "plays": len(plays),
        "total_play_count": int(plays["play_count"].sum()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("synthesize", __doc__, ["data.root", "synthesize"], out=SYNTHETIC_ROOT)
    args = parser.parse_args(argv)
    params = load_params(args.params)
    data_root = Path(read_config(params, "data", DataConfig).root)
    cfg, workers = read_config(params, "synthesize", WorldConfig, Workers)
    with run_stage("synthesize", args) as (record, _):
        if data_root.resolve() != args.out.resolve():
            # params point at a real data folder: no synthesis done for nothing.
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "NOT_USED.txt").write_text(
                f"data.root is {data_root}; the synthetic world is not generated.\n"
            )
            record["skipped"] = f"data.root is {data_root}"
            print(f"synthesize: data.root is {data_root}, nothing to synthesize")
            return 0
        summary = synthesize_world(cfg, args.out, n_jobs=workers.n_jobs)
        record.update(summary)
        write_json(args.out / "truth" / "summary.json", summary)
    print(
        f"synthesize: {summary['songs']} songs, {summary['users']} users, "
        f"{summary['plays']} (user, song) pairs -> {args.out}"
    )
    return 0
