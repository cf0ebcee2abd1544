"""The examples at the end of each command's ``--help`` (``cliargs.build_parser``), and in
docs/cli.md's spirit: what a user types, with a word on what it does."""

# An example or two per command, shown at the end of its --help.
EXAMPLES = {
    "run": """\
  immortal run worker.py -- --queue jobs       # detached; arguments after '--'
  immortal run -w 4 --listen tcp://0.0.0.0:8000 --ready line:serving server.py
  immortal run -s development --max-restarts 5 --final-exit-codes 0 job.py""",
    "up": "  immortal up                     # immortal.toml here, every program\n"
          "  immortal up -E production web   # one program, production's values\n"
          "  immortal up -c deploy/immortal.toml --set programs.web.workers=8",
    "down": "  immortal down\n  immortal down worker            # one program; the rest run on",
    "reload": "  immortal reload                 # after editing immortal.toml\n"
              "  immortal reload -E production",
    "start": "  immortal start worker\n  immortal start --foreground worker   # a unit's ExecStart",
    "forget": "  immortal forget worker          # a stopped group, gone from 'list'",
    "list": "  immortal list\n  immortal list --json",
    "status": "  immortal status worker\n  immortal status web worker --json\n"
              "  immortal status --all",
    "stop": "  immortal stop worker\n  immortal stop worker --timeout 30\n"
            "  immortal stop --all",
    "restart": "  immortal restart worker        # rolling, one instance at a time\n"
               "  immortal restart worker:2      # instance 2 alone\n"
               "  immortal restart web           # program web of immortal.toml's group",
    "signal": "  immortal signal worker USR1\n  immortal signal worker:0 HUP",
    "reopen": "  immortal reopen worker         # after logrotate moved the output file",
    "scale": "  immortal scale worker 8",
    "monitors": "  immortal monitors\n  immortal monitors --json",
    "check": "  immortal check -m file -o output=/var/log/app.log",
    "logs": "  immortal logs worker -n 100\n  immortal logs worker:1 -f",
    "config": "  immortal config\n  immortal config -E production --set programs.web.workers=8"
              "\n  immortal config -c deploy/immortal.toml --json",
    "validate": "  immortal validate && echo ok\n  immortal validate -E production",
    "completion": "  source <(immortal completion bash)       # in ~/.bashrc\n"
                  "  immortal completion zsh > \"${fpath[1]}/_immortal\"",
    "startup": "  immortal startup systemd worker\n"
               "  immortal startup systemd --user worker --install",
    "start-recorded": "  immortal start-recorded worker\n"
                      "  immortal start-recorded --foreground worker   # a unit's ExecStart",
    "save": "  immortal save",
    "resurrect": "  immortal resurrect            # after a reboot, the groups 'save' recorded",
    "metrics": "  immortal metrics\n  immortal metrics worker > /var/lib/node_exporter/w.prom",
}
