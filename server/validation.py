"""JSON-schema validation with a compiled fast path.

`jsonschema` gives the detailed errors the OCPP 1.6 error codes and the ingest's reasons
are derived from, but it interprets the schema on every call; at a few thousand messages
a second that was a quarter of the server's CPU. `FastValidator` first runs the schema
compiled to Python by `fastjsonschema`; only a payload the compiled check refuses goes to
`jsonschema`, which stays the judge (what it accepts is accepted) and names the error.

Patterns are read as JSON Schema reads them (ECMA-262): a final `$` is the end of the
value. Python's `re.search` also lets `$` match before a final newline, so "CP-1\n"
passed `^[^/]+$`; `end_anchored` gives both engines the ECMA meaning.
"""

from __future__ import annotations

import re

import fastjsonschema

_FINAL_DOLLAR = re.compile(r"(?<!\\)((?:\\\\)*)\$$")  # a `$` at the end, not escaped


def end_anchored(schema):
    """A copy of `schema` whose patterns end with `\\Z` where they ended with `$`."""
    if isinstance(schema, dict):
        return {key: (_FINAL_DOLLAR.sub(r"\1\\Z", value) if key == "pattern" and isinstance(value, str)
                      else end_anchored(value)) for key, value in schema.items()}
    if isinstance(schema, list):
        return [end_anchored(item) for item in schema]
    return schema


class FastValidator:
    def __init__(self, validator, formats: dict | None = None, draft: str | None = None):
        """`validator`: a jsonschema validator instance; `formats`: format name -> a
        function returning True for a valid value (the same rules the validator's
        format checker applies); `draft`: the `$schema` the compiled check reads the
        schema as (fastjsonschema knows drafts 4, 6 and 7)."""
        schema = end_anchored(validator.schema)
        self.validator = validator.evolve(schema=schema)
        schema = dict(schema)
        if draft is not None:
            schema["$schema"] = draft
        self._fast = fastjsonschema.compile(schema, formats=formats or {}, use_default=False)

    def compiled_accepts(self, payload) -> bool:
        """The fast path's own verdict (True: jsonschema is not consulted)."""
        try:
            self._fast(payload)
            return True
        except fastjsonschema.JsonSchemaException:
            return False

    def errors(self, payload) -> list:
        """Every schema error of `payload` (jsonschema's), [] when it is valid."""
        try:
            self._fast(payload)
            return []
        except fastjsonschema.JsonSchemaException:
            return list(self.validator.iter_errors(payload))
