"""MLE-SAM's own command: ``mlebench bench lora`` (grouped LoRA against a loop over modalities)."""

from __future__ import annotations

import click

from methods.mlesam.model import PRESET_CONFIGS
from mlebench.registry import register_command


@register_command("bench")
@click.command("lora")
@click.option("--preset", type=click.Choice(list(PRESET_CONFIGS)), default="tiny", show_default=True)
@click.option("--batch", type=click.IntRange(1), default=2, show_default=True)
@click.option("--size", type=click.IntRange(32), default=128, show_default=True)
@click.option("--repeats", type=click.IntRange(1), default=5, show_default=True)
@click.option("--no-backward", is_flag=True, help="Time the forward pass only.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def bench_lora_cmd(
    preset: str, batch: int, size: int, repeats: int, no_backward: bool, device: str, as_json: bool
) -> None:
    """Grouped LoRA (one trunk pass for all modalities) vs a loop over modalities."""
    import json

    from methods.mlesam.bench import bench_lora

    if size % 32:
        raise click.BadParameter(f"{size} is not a multiple of 32", param_hint="--size")
    result = bench_lora(preset, batch=batch, size=size, repeats=repeats, backward=not no_backward, device=device)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    what = "forward" if no_backward else "forward+backward"
    click.echo(f"LoRA encode of {len(result['modalities'])} modalities, {preset} preset, "
               f"batch {batch}, {size}x{size}, {what}, {device} (best of {repeats})")
    click.echo(f"  loop over modalities : {result['loop_s'] * 1e3:9.1f} ms")
    click.echo(f"  grouped (one pass)   : {result['grouped_s'] * 1e3:9.1f} ms")
    click.echo(f"  ratio loop/grouped   : {result['ratio']:9.2f}x")
    click.echo(f"  max |grouped - loop| : {result['max_abs_diff']:.2e}")
