"""Request fields that once broke the server (500 over REST, close 4500 on the WebSocket), each with the clear
4xx error both APIs must answer with instead. Shared by test_synthesize.py and test_websocket.py."""
import pytest

_DEEP = 1000  # levels: Python's recursion limit was the SSML walker's
HOSTILE_FIELDS = [
    pytest.param({"ssml": "<speak>" + "<s>" * _DEEP + "deep" + "</s>" * _DEEP + "</speak>"}, "invalid_ssml", id="nested-1000"),
    pytest.param({"ssml": '<speak><prosody volume="+10000dB">loud</prosody></speak>'}, "invalid_ssml", id="volume-dB"),
    pytest.param({"ssml": '<speak><prosody volume="-1000dB">quiet</prosody></speak>'}, "invalid_ssml", id="volume-low"),
    pytest.param({"ssml": f'<speak><prosody rate="{"1" * 400}%">fast</prosody></speak>'}, "invalid_ssml", id="rate-400-digits"),
    pytest.param({"ssml": '<speak><prosody rate="-100%">stopped</prosody></speak>'}, "invalid_ssml", id="rate-zero"),
    pytest.param({"ssml": f'<speak><prosody pitch="+{"9" * 400}%">high</prosody></speak>'}, "invalid_ssml", id="pitch-huge"),
    pytest.param({"ssml": f'<speak>a<break time="{"9" * 400}ms"/>b</speak>'}, "invalid_ssml", id="break-400-digits"),
    pytest.param({"ssml": '<speak>a<break time="90s"/>b</speak>'}, "invalid_ssml", id="break-too-long"),
    pytest.param({"text": "hi", "speed": "1" * 400}, "invalid_request", id="speed-400-digits"),
    pytest.param({"text": "hi", "speed": 10**400}, "invalid_request", id="speed-huge-integer"),
    pytest.param({"text": "hi", "speed": "nan"}, "invalid_request", id="speed-nan"),
]
