"""The webui layer: what a webui job needs beyond the pure-torch core (imported only by scripts/todo.py).

- `job`: one generation job, which owns installing ToDo per sampling pass, releasing it and finishing the job.
- `script_args`: the script's public argument order and untyped API values -> settings.
- `infotext`: settings to and from the image's infotext.
"""
