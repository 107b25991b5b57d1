"""Print the README's configuration table from the declared settings: `python -m service.print_settings`."""

from .settings import markdown_table

if __name__ == "__main__":
    print(markdown_table())
