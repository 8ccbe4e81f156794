"""Command-line interface (being written)."""
import click

@click.group()
def main() -> None:
    """mlebench."""
