"""``fastvid data ...``: synthetic datasets, unpacking Jester, and writing the dataset lists
(Jester / Sth-v1 frames, Kinetics-style videos, Something-Something V2)."""
from __future__ import annotations

from typing import Optional

import click

from fastvid.cli import cli
from fastvid.cli.common import friendly_errors, int_list


def _size(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    from fastvid.data.synth import parse_size
    from fastvid.errors import FastvidError

    try:
        return parse_size(value)
    except FastvidError as exc:
        raise click.BadParameter(str(exc)) from None


@cli.group("data")
def data() -> None:
    """Make synthetic datasets and prepare downloaded ones (Jester, Sth-v1, Sth-v2, Kinetics)."""


@data.command("synth")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--kind", type=click.Choice(["frames", "video"]), default="frames", show_default=True,
              help="frames: Jester layout (JPEG folders + *_videofolder.txt); video: video files "
                   "+ train_list.txt/val_list.txt.")
@click.option("--codec", type=click.Choice(["mjpeg", "vp9", "h264"]), default="mjpeg",
              show_default=True, help="Video codec for --kind video (.avi, .webm, .mp4).")
@click.option("--classes", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Classes: pairs of opposite motions (grow/shrink, cw/ccw, right/left, down/up), "
                   "then combined with shape and palette.")
@click.option("--train", "train_count", type=click.IntRange(min=1), default=64, show_default=True,
              help="Training clips.")
@click.option("--val", "val_count", type=click.IntRange(min=1), default=32, show_default=True,
              help="Validation clips.")
@click.option("--frames", type=click.IntRange(min=2), default=16, show_default=True,
              help="Mean frames per clip (each clip has +-25%).")
@click.option("--size", default="96x96", show_default=True, callback=_size, metavar="WxH",
              help="Frame size.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Everything written is a function of the options and this seed.")
@click.option("--class-ids", default=None, metavar="I,J,...",
              help="Use these generator classes instead of the first --classes, e.g. 0,32: the "
                   "same motion with a colour vs a grey object (separable from one frame).")
@friendly_errors
def synth_cmd(out: str, kind: str, codec: str, classes: int, train_count: int, val_count: int,
              frames: int, size: tuple[int, int], seed: int, class_ids: Optional[str]) -> None:
    """Write a small synthetic action dataset to OUT whose classes need temporal order."""
    from fastvid.data.synth import synth_dataset

    ids = int_list(class_ids, "--class-ids", "0,32") if class_ids else None
    summary = synth_dataset(out, kind=kind, codec=codec, classes=classes, train=train_count,
                            val=val_count, frames=frames, size=size, seed=seed, progress=True,
                            class_ids=ids)
    classes = len(summary["classes"])
    what = "frame folders" if kind == "frames" else f"{codec} videos"
    click.echo(f"{summary['train']} train + {summary['val']} val {what} "
               f"({summary['num_frames']} frames, {size[0]}x{size[1]}), {classes} classes: "
               f"{', '.join(summary['classes'])} -> {out} ({summary['seconds']:.1f} s)")


@data.command("unpack-jester")
@click.argument("zip_dir", type=click.Path(file_okay=False))
@click.argument("target", type=click.Path(file_okay=False))
@click.option("--parts", type=click.IntRange(min=1), default=23, show_default=True,
              help="Number of archive parts (20bn-jester-v1-00 ...).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar.")
@friendly_errors
def unpack_jester_cmd(zip_dir: str, target: str, parts: int, progress: bool) -> None:
    """Extract the split 20BN-Jester archive in ZIP_DIR into TARGET and copy its label CSVs.

    TARGET gets 20bn-jester-v1/<id>/*.jpg and labels/{labels,train,validation,test}.csv; run
    'fastvid data prepare-jester TARGET' next.
    """
    from fastvid.data.prepare import unpack_jester

    res = unpack_jester(zip_dir, target, num_parts=parts, progress=progress)
    click.echo(f"unpacked {res['files']} files in {res['folders']} folders from {res['parts']} "
               f"parts ({res['bytes'] / 1e9:.2f} GB) into {target}; labels copied: "
               f"{', '.join(res['labels_copied']) or 'none'}")
    if res["labels_missing"]:
        click.echo(f"warning: label files not found: {', '.join(res['labels_missing'])}", err=True)


def _frames_command(dataset: str):
    """``prepare-jester`` / ``prepare-sthv1``: the same reader with the dataset's official names."""
    from fastvid.data.prepare import FRAME_DATASETS

    ds = FRAME_DATASETS[dataset]
    doc = (f"{ds.title} as downloaded -> categories.txt, train/val_videofolder.txt.\n\n"
           f"Reads {ds.prefix}-{{labels,train,validation}}.csv (or labels.csv, train.csv, "
           f"validation.csv) from ROOT, ROOT/labels or ROOT/annotations and counts the frames "
           f"of ROOT/{ds.frames_dir}/<id>/. Classes keep the label file's order.")

    @data.command(ds.command, help=doc)
    @click.argument("root", type=click.Path(file_okay=False))
    @click.option("--frames-dir", default=ds.frames_dir, show_default=True,
                  help="Folder of the frame folders (<id>/00001.jpg ...), relative to ROOT.")
    @click.option("--labels-dir", default=None,
                  help=f"Folder of the label CSVs, relative to ROOT or absolute (default: the "
                       f"first of ROOT, ROOT/labels, ROOT/annotations holding "
                       f"{ds.prefix}-labels.csv or labels.csv).")
    @click.option("--frame-tmpl", default="{:05d}.jpg", show_default=True,
                  help="Frame file names (1-based).")
    @click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar.")
    @friendly_errors
    def command(root: str, frames_dir: str, labels_dir: Optional[str], frame_tmpl: str,
                progress: bool) -> None:
        from fastvid.data.prepare import prepare_frames

        res = prepare_frames(root, dataset, frames_dir=frames_dir, labels_dir=labels_dir,
                             frame_tmpl=frame_tmpl, progress=progress)
        click.echo(f"{res['classes']} classes, {res['train']} train + {res['val']} val videos "
                   f"listed in {root}; {res['num_skipped']} left out (missing or empty frame "
                   f"folders)")

    return command


prepare_jester_cmd = _frames_command("jester")
prepare_sthv1_cmd = _frames_command("sthv1")


@data.command("prepare-videos")
@click.argument("root", type=click.Path(file_okay=False))
@click.option("--videos-dir", default=None,
              help="Folder holding the videos, relative to ROOT ('.' for ROOT). Default: "
                   "ROOT/videos, else ROOT itself when it holds Kinetics' train/ and val/ or "
                   "annotations/.")
@click.option("--ext", "exts", multiple=True, metavar="EXT",
              help="Video suffix to take (repeatable; default mp4 webm avi mkv mov m4v).")
@click.option("--split-file", "split_files", multiple=True, type=click.Path(dir_okay=False),
              help="Kinetics annotation CSV (label,youtube_id,time_start,time_end,split); "
                   "repeatable. Default: ROOT/annotations/{train,val}.csv when present (as "
                   "downloaded); else the split comes from train/ and val/ folders, or from "
                   "--val-fraction.")
@click.option("--categories", type=click.Path(dir_okay=False), default=None,
              help="categories.txt fixing the class order (default: sorted class names).")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.2,
              show_default=True, help="Share of each class held out when nothing gives the split.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of that split.")
@friendly_errors
def prepare_videos_cmd(root: str, videos_dir: Optional[str], exts: tuple[str, ...],
                       split_files: tuple[str, ...], categories: Optional[str],
                       val_fraction: float, seed: int) -> None:
    """Video files under ROOT -> train_list.txt, val_list.txt ('path label'), categories.txt.

    Kinetics-400 as downloaded works without options: ROOT/annotations/{train,val}.csv and
    ROOT/{train,val}/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4 (or flat in train/ and
    val/, as the CVDF archives unpack); a video the CSV lists but that is missing is counted
    and left out. Other layouts: ROOT/VIDEOS_DIR/<class>/<file>,
    ROOT/VIDEOS_DIR/{train,val}/<class>/<file>. Classes are sorted by name (mmaction2's
    Kinetics label map) unless --categories fixes them.
    """
    from fastvid.data.prepare import prepare_videos
    from fastvid.data.video_io import VIDEO_EXTS

    res = prepare_videos(root, videos_dir=videos_dir, exts=exts or VIDEO_EXTS,
                         split_files=split_files, categories=categories,
                         val_fraction=val_fraction, seed=seed)
    click.echo(f"{res['classes']} classes, {res['train']} train + {res['val']} val videos "
               f"({res['layout']}) listed in {root}"
               + (f"; {len(res['missing'])} annotated videos not found" if res["missing"] else ""))


@data.command("prepare-sthv2")
@click.argument("root", type=click.Path(file_okay=False))
@click.option("--videos-dir", default="20bn-something-something-v2", show_default=True,
              help="Folder of the <id>.webm videos, relative to ROOT.")
@click.option("--annotations-dir", default=None,
              help="Folder of labels.json, train.json, validation.json (or the older "
                   "something-something-v2-*.json), relative to ROOT or absolute (default: the "
                   "first of ROOT, ROOT/labels, ROOT/annotations holding them).")
@click.option("--frames-dir", default=None,
              help="Folder of extracted frames (<id>/00001.jpg ...), relative to ROOT: list the "
                   "frame folders (train/val_videofolder.txt) instead of the videos.")
@click.option("--frame-tmpl", default="{:05d}.jpg", show_default=True,
              help="Frame file names (1-based), with --frames-dir.")
@click.option("--ext", default=".webm", show_default=True, help="Video file suffix.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar.")
@friendly_errors
def prepare_sthv2_cmd(root: str, videos_dir: str, annotations_dir: Optional[str],
                      frames_dir: Optional[str], frame_tmpl: str, ext: str, progress: bool) -> None:
    """Something-Something V2 under ROOT -> categories.txt + train/val lists.

    Reads labels/{labels,train,validation}.json as downloaded (or the older
    something-something-v2-*.json names); writes train_list.txt and
    val_list.txt ('<videos-dir>/<id>.webm label'), or with --frames-dir train_videofolder.txt
    and val_videofolder.txt ('<id> <num_frames> label').
    """
    from fastvid.data.prepare import prepare_sthv2

    res = prepare_sthv2(root, videos_dir=videos_dir, annotations_dir=annotations_dir,
                        frames_dir=frames_dir, frame_tmpl=frame_tmpl, ext=ext, progress=progress)
    what = "missing videos" if res["format"] == "videos" else "missing or empty frame folders"
    click.echo(f"{res['classes']} classes, {res['train']} train + {res['val']} val videos "
               f"({res['format']}) listed in {root}; {len(res['missing'])} left out ({what})")
