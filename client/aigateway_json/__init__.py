"""JSON <-> protobuf translation for the `aigateway.v1` messages.

The public names are those of `aigateway_json.translate` (its `__all__`): `from_json`,
`to_json`, `from_json_bytes`, `to_json_bytes`, the typed shortcuts (`chat_request_from_json`,
...), `request_body` and `TranslationError`. The mapping: docs/json-mapping.md.
"""

from aigateway_json import translate
from aigateway_json.translate import *  # noqa: F403

__all__ = translate.__all__
