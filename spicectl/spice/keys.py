"""Key names and US-layout text as PC AT set 1 scancodes, encoded as SPICE expects them.

SPICE sends a key's make code as the scancode, with extended keys as
0xe0 | (scancode << 8); the break code sets bit 7 of the scancode.
"""

from __future__ import annotations

from spicectl.errors import InvalidInput

EXTENDED = 0x100

KEYS: dict[str, int] = {
    "esc": 0x01, "escape": 0x01,
    "1": 0x02, "2": 0x03, "3": 0x04, "4": 0x05, "5": 0x06, "6": 0x07, "7": 0x08, "8": 0x09, "9": 0x0A,
    "0": 0x0B, "minus": 0x0C, "equal": 0x0D, "backspace": 0x0E, "tab": 0x0F,
    "q": 0x10, "w": 0x11, "e": 0x12, "r": 0x13, "t": 0x14, "y": 0x15, "u": 0x16, "i": 0x17, "o": 0x18,
    "p": 0x19, "bracketleft": 0x1A, "bracketright": 0x1B, "enter": 0x1C, "return": 0x1C,
    "ctrl": 0x1D, "lctrl": 0x1D, "control": 0x1D,
    "a": 0x1E, "s": 0x1F, "d": 0x20, "f": 0x21, "g": 0x22, "h": 0x23, "j": 0x24, "k": 0x25, "l": 0x26,
    "semicolon": 0x27, "apostrophe": 0x28, "grave": 0x29, "shift": 0x2A, "lshift": 0x2A, "backslash": 0x2B,
    "z": 0x2C, "x": 0x2D, "c": 0x2E, "v": 0x2F, "b": 0x30, "n": 0x31, "m": 0x32, "comma": 0x33,
    "period": 0x34, "dot": 0x34, "slash": 0x35, "rshift": 0x36, "kp_multiply": 0x37,
    "alt": 0x38, "lalt": 0x38, "space": 0x39, "capslock": 0x3A,
    "f1": 0x3B, "f2": 0x3C, "f3": 0x3D, "f4": 0x3E, "f5": 0x3F, "f6": 0x40, "f7": 0x41, "f8": 0x42,
    "f9": 0x43, "f10": 0x44, "numlock": 0x45, "scrolllock": 0x46,
    "kp_7": 0x47, "kp_8": 0x48, "kp_9": 0x49, "kp_minus": 0x4A, "kp_4": 0x4B, "kp_5": 0x4C, "kp_6": 0x4D,
    "kp_plus": 0x4E, "kp_1": 0x4F, "kp_2": 0x50, "kp_3": 0x51, "kp_0": 0x52, "kp_decimal": 0x53,
    "f11": 0x57, "f12": 0x58,
    "kp_enter": EXTENDED | 0x1C, "rctrl": EXTENDED | 0x1D, "kp_divide": EXTENDED | 0x35,
    "ralt": EXTENDED | 0x38, "altgr": EXTENDED | 0x38,
    "home": EXTENDED | 0x47, "up": EXTENDED | 0x48, "pgup": EXTENDED | 0x49, "pageup": EXTENDED | 0x49,
    "left": EXTENDED | 0x4B, "right": EXTENDED | 0x4D, "end": EXTENDED | 0x4F, "down": EXTENDED | 0x50,
    "pgdn": EXTENDED | 0x51, "pagedown": EXTENDED | 0x51, "insert": EXTENDED | 0x52,
    "delete": EXTENDED | 0x53, "del": EXTENDED | 0x53,
    "super": EXTENDED | 0x5B, "lsuper": EXTENDED | 0x5B, "win": EXTENDED | 0x5B, "rsuper": EXTENDED | 0x5C,
    "menu": EXTENDED | 0x5D,
}

_UNSHIFTED = "1234567890-=qwertyuiop[]asdfghjkl;'`\\zxcvbnm,./"
_SHIFTED = '!@#$%^&*()_+QWERTYUIOP{}ASDFGHJKL:"~|ZXCVBNM<>?'
_NAMES = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0", "minus", "equal",
          *"qwertyuiop", "bracketleft", "bracketright", *"asdfghjkl", "semicolon", "apostrophe", "grave",
          "backslash", *"zxcvbnm", "comma", "period", "slash"]
CHARS: dict[str, tuple[int, bool]] = {}
for _plain, _shifted, _name in zip(_UNSHIFTED, _SHIFTED, _NAMES, strict=True):
    CHARS[_plain] = (KEYS[_name], False)
    CHARS[_shifted] = (KEYS[_name], True)
CHARS.update({" ": (KEYS["space"], False), "\n": (KEYS["enter"], False), "\t": (KEYS["tab"], False)})


# Linux input (evdev) key codes, as an X server with evdev keycodes reports them (X keycode - 8): the
# first 88 are the set 1 scancodes themselves; these others are extended keys
_EVDEV_EXTENDED = {
    96: 0x1C, 97: 0x1D, 98: 0x35, 99: 0x37, 100: 0x38, 102: 0x47, 103: 0x48, 104: 0x49, 105: 0x4B,
    106: 0x4D, 107: 0x4F, 108: 0x50, 109: 0x51, 110: 0x52, 111: 0x53, 125: 0x5B, 126: 0x5C, 127: 0x5D,
}
_EVDEV_PLAIN = {86: 0x56, 87: 0x57, 88: 0x58}  # 102nd key, F11, F12


def scancode_from_evdev(code: int) -> int | None:
    """The set 1 scancode (EXTENDED-flagged) of a Linux key code; None for keys a PC keyboard lacks."""
    if 1 <= code <= 83:
        return code
    if code in _EVDEV_PLAIN:
        return _EVDEV_PLAIN[code]
    if code in _EVDEV_EXTENDED:
        return EXTENDED | _EVDEV_EXTENDED[code]
    return None


def make_code(scancode: int) -> int:
    if scancode & EXTENDED:
        return 0xE0 | ((scancode & 0xFF) << 8)
    return scancode


def break_code(scancode: int) -> int:
    if scancode & EXTENDED:
        return 0xE0 | (((scancode & 0xFF) | 0x80) << 8)
    return scancode | 0x80


def parse_combo(text: str) -> list[int]:
    """'ctrl-alt-delete' or 'ctrl+c' or 'esc' → scancodes, pressed in order, released in reverse."""
    names = [n for n in text.lower().replace("+", "-").split("-") if n] if text not in ("-", "+") else [text]
    if text.endswith("--"):
        names.append("minus")
    codes = []
    for name in names:
        if name not in KEYS:
            raise InvalidInput(f"unknown key {name!r} in {text!r}",
                               hint="names like esc, enter, ctrl, alt, shift, f1-f12, up, a, 1; join with '-'")
        codes.append(KEYS[name])
    if not codes:
        raise InvalidInput(f"no key in {text!r}")
    return codes


def text_to_strokes(text: str) -> list[tuple[int, bool]]:
    """US layout: each character as (scancode, needs shift)."""
    strokes = []
    for ch in text:
        if ch not in CHARS:
            raise InvalidInput(f"cannot type {ch!r} on a US keyboard layout", hint="use send-keys for special keys")
        strokes.append(CHARS[ch])
    return strokes
