"""``ciml config show``: the configuration file in use, secrets masked."""

from cliff.show import ShowOne


class ConfigShow(ShowOne):
    """Show the configuration file in use and its tables, secrets masked"""

    def take_action(self, parsed_args):
        from ciml.base.config import current

        config = current()
        data = {"file": str(config.path) if config.path else ""}
        data.update(config.as_dict())
        return tuple(data), tuple(data.values())
