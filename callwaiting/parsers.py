"""Request body parsers: DRF's, with every way a hostile body can fail turned into 400 malformed_request."""
from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    """DRF's JSONParser catches ValueError only; JSON nested a few thousand levels deep raises RecursionError
    in the decoder, which would be a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
