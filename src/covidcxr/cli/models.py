"""``covidcxr models``: the pretrained models, then the architectures to train."""

from __future__ import annotations

import typer

from covidcxr.cli.app import app


@app.command("models")
def models_command() -> None:
    """The pretrained models that ship with covidcxr (use them by name), then the
    architectures you can train."""
    from covidcxr import zoo
    from covidcxr.inference.artifact import read_card
    from covidcxr.models import get_model_spec, list_models

    names = zoo.pretrained_names()
    if names:
        typer.echo("Pretrained (use by name: predict, serve, explain, export, --seg-model):")
        for name in names:
            card, _ = read_card(name)
            typer.echo(f"  {name:<22} {card.task:<14} {_card_figure(card)}")
            trained_on = card.training_data.get("name", "unknown data")
            typer.echo(f"  {'':<22} trained on {trained_on}")
        typer.echo("")
    typer.echo("Architectures (covidcxr train --model NAME / segment train --model NAME):")
    for name in list_models():
        spec = get_model_spec(name)
        size = f"{spec.input_size}x{spec.input_size}"
        typer.echo(f"  {name:<22} {spec.task:<14} {size:<8} {spec.description}")


def _card_figure(card) -> str:
    """The headline test figure of a model card, with the data it was measured on."""
    metrics = card.metrics
    if card.task == "segmentation":
        dice = metrics.get("test_dice")
        return "" if dice is None else f"test Dice {dice:.3f}"
    accuracy = metrics.get("test_accuracy")
    if accuracy is None:
        return ""
    covid = metrics.get("test_per_class", {}).get("COVID", {}).get("recall")
    recall = "" if covid is None else f", COVID recall {100 * covid:.1f} %"
    return (
        f"test accuracy {100 * accuracy:.1f} %{recall} ({metrics.get('test_images', '?')} images)"
    )
