"""``ciml complete``: a bash completion script that also completes ciml's names.

cliff's own script completes commands and options, needs the
bash-completion package (``_get_comp_words_by_ref``) and offers file names
everywhere else.  This one needs only bash, and completes what a user
types: dataset and experiment names read from the data path at completion
time (``--data-path`` on the line, ``$CIML_DATA_PATH``, or the default), and
plugin kinds and names (``--estimator``, ``--source``, ``--trigger``...) as
installed when the script was generated; file names only after options
that take a path.
"""

from cliff.complete import CompleteCommand, CompleteDictionary

#: Options whose value is a name of this sort.
NAME_OPTIONS = {
    "dataset": ("--dataset", "--eval-dataset"),
    "experiment": ("--experiment",),
    "estimator": ("--estimator",),
    "result_source": ("--source",),
    "metric_source": ("--metric-source",),
    "trigger": ("--trigger",),
    "kind": ("--kind",),
}
#: Options whose value is a file or folder.
PATH_OPTIONS = ("--data-path", "--output-dir", "--plot-dir", "--output", "--log-file",
                "--workdir", "--history-dir")
#: Commands whose first argument is a dataset or experiment name.
POSITIONAL = {"dataset_show": "dataset", "dataset_delete": "dataset",
              "dataset_plot": "dataset", "experiment_show": "experiment",
              "experiment_delete": "experiment"}

_SCRIPT = r'''
_ciml_data_path()
{
  local i n=${#COMP_WORDS[@]}
  for ((i=1; i<n; i++)); do
    case ${COMP_WORDS[i]} in
      --data-path) echo "${COMP_WORDS[i+1]}"; return ;;
      --data-path=*) echo "${COMP_WORDS[i]#--data-path=}"; return ;;
    esac
  done
  if [ -n "${CIML_DATA_PATH}" ]; then echo "${CIML_DATA_PATH}"; return; fi
  echo "${XDG_DATA_HOME:-$HOME/.local/share}/ciml"
}

_ciml_names()
{
  local root f
  root=$(_ciml_data_path)
  root=${root/#\~/$HOME}
  case $1 in
    dataset)
      for f in "$root"/datasets/*/zarr.json; do
        [ -e "$f" ] && f=${f%/zarr.json} && echo "${f##*/}"
      done ;;
    experiment)
      for f in "$root"/experiments/*.json; do
        [ -e "$f" ] && f=${f##*/} && echo "${f%.json}"
      done ;;
    *) local v="_ciml_plugins_$1"; echo "${!v}" ;;
  esac
}

__NAME__()
{
  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
  COMPREPLY=()
  case $prev in
__CASES__
  esac
  # The command typed so far: the words before the first option.
  local cmd="" w var comp completed="${cmds}" positional=0 dash=- underscore=_ skip=0
  for w in "${COMP_WORDS[@]:1:COMP_CWORD-1}"; do
    if [ $skip = 1 ]; then skip=0; continue; fi
    if [[ $w == -* ]]; then
      # ciml's own options come before the command; the command's end it.
      [ -n "$cmd" ] && break
      case $w in --data-path|--log-file) skip=1 ;; esac
      continue
    fi
    if [ -z "$cmd" ]; then var="$w"; else var="${cmd}_${w}"; fi
    var=${var//$dash/$underscore}
    local key="cmds_${var}"
    comp="${!key}"
    if [ -z "$comp" ]; then
      positional=$((positional + 1))
      continue
    fi
    cmd="$var"
    completed="$comp"
  done
  if [[ $cur != -* ]]; then
    case "$cmd:$positional" in
__POSITIONAL__
      plugin_show:0) COMPREPLY=( $(compgen -W "$(_ciml_names kind)" -- "$cur") ); return 0 ;;
      plugin_show:1)
        local kind="${COMP_WORDS[COMP_CWORD-1]//-/_}"
        COMPREPLY=( $(compgen -W "$(_ciml_names "$kind")" -- "$cur") ); return 0 ;;
    esac
    if [ -n "$cmd" ] && [[ $completed == -* ]]; then
      return 0  # the command is complete; its options start with -
    fi
  fi
  COMPREPLY=( $(compgen -W "${completed}" -- "$cur") )
  return 0
}
complete -F __NAME__ __PROG__
'''


def _escape(word):
    return "".join(c if c.isalnum() or c in "-_.:/" else "" for c in word)


class Complete(CompleteCommand):
    """Print a bash completion script: commands, options, dataset/experiment/plugin names

    Load it with ``eval "$(ciml complete)"`` or save it in
    ``~/.local/share/bash-completion/completions/ciml``.  Only bash is
    needed.  Dataset and experiment names are read when you press Tab;
    plugin names are those installed when the script was made.
    """

    def take_action(self, parsed_args):
        if parsed_args.shell != "bash":
            return super().take_action(parsed_args)
        from ciml.base import KINDS
        from ciml.plugins import get_manager

        name = parsed_args.name or self.app.NAME
        func = "_" + "".join(c if c.isalnum() else "_" for c in name)
        data = CompleteDictionary()
        for cmd in self.app.command_manager:
            command = cmd[0].split()
            data.add_command(command, self.get_actions(command))
        out = self.app.stdout
        out.write(f"# bash completion for {name} (ciml complete)\n")
        manager = get_manager()
        for kind in KINDS:
            names = " ".join(_escape(i.name) for i in manager.all(kind))
            out.write(f"_ciml_plugins_{kind}='{names}'\n")
        out.write("_ciml_plugins_kind='"
                  + " ".join(k.replace("_", "-") for k in KINDS) + "'\n")
        out.write(f"cmds='{data.get_commands()}'\n")
        for key, value in data.get_data():
            out.write(f"cmds_{key.replace('-', '_')}='{value}'\n")
        cases = []
        for sort, options in NAME_OPTIONS.items():
            cases.append(f"    {'|'.join(options)})\n"
                         f"      COMPREPLY=( $(compgen -W \"$(_ciml_names {sort})\" "
                         f"-- \"$cur\") ); return 0 ;;")
        cases.append(f"    {'|'.join(PATH_OPTIONS)})\n"
                     "      COMPREPLY=( $(compgen -f -- \"$cur\") ); return 0 ;;")
        positional = [f"      {cmd}:0) COMPREPLY=( $(compgen -W \"$(_ciml_names {sort})\" "
                      f"-- \"$cur\") ); return 0 ;;" for cmd, sort in POSITIONAL.items()]
        out.write(_SCRIPT.replace("__CASES__", "\n".join(cases))
                  .replace("__POSITIONAL__", "\n".join(positional))
                  .replace("__NAME__", func).replace("__PROG__", name).lstrip("\n"))
        return 0
