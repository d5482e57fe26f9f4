"""Message numbers and fixed-layout message bodies (spice-protocol enums.h, spice-common spice.proto)."""

from __future__ import annotations

from spicectl.spice.wire import Layout

# Common to all channels, server → client
MSG_MIGRATE, MSG_MIGRATE_DATA, MSG_SET_ACK, MSG_PING, MSG_WAIT_FOR_CHANNELS, MSG_DISCONNECTING, MSG_NOTIFY, \
    MSG_LIST = range(1, 9)
# client → server
MSGC_ACK_SYNC, MSGC_ACK, MSGC_PONG = 1, 2, 3
MSGC_DISCONNECTING = 6

# Main channel
MSG_MAIN_INIT, MSG_MAIN_CHANNELS_LIST, MSG_MAIN_MOUSE_MODE, MSG_MAIN_MULTI_MEDIA_TIME = 103, 104, 105, 106
MSG_MAIN_AGENT_CONNECTED, MSG_MAIN_AGENT_DISCONNECTED, MSG_MAIN_AGENT_DATA, MSG_MAIN_AGENT_TOKEN = 107, 108, 109, 110
MSG_MAIN_NAME, MSG_MAIN_UUID, MSG_MAIN_AGENT_CONNECTED_TOKENS = 113, 114, 115
MSGC_MAIN_CLIENT_INFO, MSGC_MAIN_ATTACH_CHANNELS, MSGC_MAIN_MOUSE_MODE_REQUEST = 101, 104, 105

# Display channel
MSG_DISPLAY_MODE, MSG_DISPLAY_MARK, MSG_DISPLAY_RESET, MSG_DISPLAY_COPY_BITS = 101, 102, 103, 104
MSG_DISPLAY_INVAL_LIST, MSG_DISPLAY_INVAL_ALL_PIXMAPS, MSG_DISPLAY_INVAL_PALETTE, MSG_DISPLAY_INVAL_ALL_PALETTES = \
    105, 106, 107, 108
MSG_DISPLAY_STREAM_CREATE, MSG_DISPLAY_STREAM_DATA, MSG_DISPLAY_STREAM_CLIP, MSG_DISPLAY_STREAM_DESTROY, \
    MSG_DISPLAY_STREAM_DESTROY_ALL = 122, 123, 124, 125, 126
MSG_DISPLAY_DRAW_FILL, MSG_DISPLAY_DRAW_OPAQUE, MSG_DISPLAY_DRAW_COPY, MSG_DISPLAY_DRAW_BLEND = 302, 303, 304, 305
MSG_DISPLAY_DRAW_BLACKNESS, MSG_DISPLAY_DRAW_WHITENESS, MSG_DISPLAY_DRAW_INVERS, MSG_DISPLAY_DRAW_ROP3 = \
    306, 307, 308, 309
MSG_DISPLAY_DRAW_STROKE, MSG_DISPLAY_DRAW_TEXT, MSG_DISPLAY_DRAW_TRANSPARENT, MSG_DISPLAY_DRAW_ALPHA_BLEND = \
    310, 311, 312, 313
MSG_DISPLAY_SURFACE_CREATE, MSG_DISPLAY_SURFACE_DESTROY, MSG_DISPLAY_STREAM_DATA_SIZED = 314, 315, 316
MSG_DISPLAY_MONITORS_CONFIG, MSG_DISPLAY_DRAW_COMPOSITE, MSG_DISPLAY_STREAM_ACTIVATE_REPORT = 317, 318, 319
MSGC_DISPLAY_INIT = 101

# Inputs channel
MSG_INPUTS_INIT, MSG_INPUTS_KEY_MODIFIERS, MSG_INPUTS_MOUSE_MOTION_ACK = 101, 102, 111
MSGC_INPUTS_KEY_DOWN, MSGC_INPUTS_KEY_UP, MSGC_INPUTS_KEY_MODIFIERS = 101, 102, 103
MSGC_INPUTS_MOUSE_MOTION, MSGC_INPUTS_MOUSE_POSITION, MSGC_INPUTS_MOUSE_PRESS, MSGC_INPUTS_MOUSE_RELEASE = \
    111, 112, 113, 114

# Image types and flags
IMAGE_BITMAP, IMAGE_QUIC = 0, 1
IMAGE_LZ_PLT, IMAGE_LZ_RGB, IMAGE_GLZ_RGB, IMAGE_FROM_CACHE, IMAGE_SURFACE, IMAGE_JPEG, \
    IMAGE_FROM_CACHE_LOSSLESS, IMAGE_ZLIB_GLZ_RGB, IMAGE_JPEG_ALPHA, IMAGE_LZ4 = range(100, 110)
IMAGE_CACHE_ME, IMAGE_HIGH_BITS_SET, IMAGE_CACHE_REPLACE_ME = 1, 2, 4
BITMAP_PAL_CACHE_ME, BITMAP_PAL_FROM_CACHE, BITMAP_TOP_DOWN = 1, 2, 4
BITMAP_1BIT_LE, BITMAP_1BIT_BE, BITMAP_4BIT_LE, BITMAP_4BIT_BE, BITMAP_8BIT, BITMAP_16BIT, BITMAP_24BIT, \
    BITMAP_32BIT, BITMAP_RGBA, BITMAP_8BIT_A = range(1, 11)

# Mouse
MOUSE_MODE_SERVER, MOUSE_MODE_CLIENT = 1, 2
BUTTON_LEFT, BUTTON_MIDDLE, BUTTON_RIGHT, BUTTON_UP, BUTTON_DOWN = 1, 2, 3, 4, 5
BUTTON_MASK = {BUTTON_LEFT: 1, BUTTON_MIDDLE: 2, BUTTON_RIGHT: 4}

# Framing
MINI_HEADER = Layout("SpiceMiniDataHeader", [("type", "H"), ("size", "I")])
FULL_HEADER = Layout("SpiceDataHeader", [("serial", "Q"), ("type", "H"), ("size", "I"), ("sub_list", "I")])

# Fixed bodies
SET_ACK = Layout("SpiceMsgSetAck", [("generation", "I"), ("window", "I")])
ACK_SYNC = Layout("SpiceMsgcAckSync", [("generation", "I")])
PING = Layout("SpiceMsgPing", [("id", "I"), ("timestamp", "Q")])
NOTIFY = Layout("SpiceMsgNotify", [("time_stamp", "Q"), ("severity", "I"), ("visibility", "I"), ("what", "I"),
                                   ("message_len", "I")])
DISCONNECTING = Layout("SpiceMsgDisconnect", [("time_stamp", "Q"), ("reason", "I")])
MAIN_INIT = Layout("SpiceMsgMainInit", [
    ("session_id", "I"), ("display_channels_hint", "I"), ("supported_mouse_modes", "I"),
    ("current_mouse_mode", "I"), ("agent_connected", "I"), ("agent_tokens", "I"), ("multi_media_time", "I"),
    ("ram_hint", "I"),
])
MAIN_MOUSE_MODE = Layout("SpiceMsgMainMouseMode", [("supported_modes", "H"), ("current_mode", "H")])
MOUSE_MODE_REQUEST = Layout("SpiceMsgcMainMouseModeRequest", [("mode", "H")])
CHANNEL_ID = Layout("SpiceChannelId", [("type", "B"), ("id", "B")])
DISPLAY_INIT = Layout("SpiceMsgcDisplayInit", [
    ("pixmap_cache_id", "B"), ("pixmap_cache_size", "q"), ("glz_dictionary_id", "B"),
    ("glz_dictionary_window_size", "i"),
])
SURFACE_CREATE = Layout("SpiceMsgSurfaceCreate", [("surface_id", "I"), ("width", "I"), ("height", "I"),
                                                  ("format", "I"), ("flags", "I")])
SURFACE_DESTROY = Layout("SpiceMsgSurfaceDestroy", [("surface_id", "I")])
DISPLAY_MODE = Layout("SpiceMsgDisplayMode", [("x_res", "I"), ("y_res", "I"), ("bits", "I")])
RECT = Layout("SpiceRect", [("top", "i"), ("left", "i"), ("bottom", "i"), ("right", "i")])
POINT = Layout("SpicePoint", [("x", "i"), ("y", "i")])
IMAGE_DESCRIPTOR = Layout("SpiceImageDescriptor", [("id", "Q"), ("type", "B"), ("flags", "B"), ("width", "I"),
                                                   ("height", "I")])
BITMAP = Layout("SpiceBitmap", [("format", "B"), ("flags", "B"), ("x", "I"), ("y", "I"), ("stride", "I")])
PALETTE_HEAD = Layout("SpicePalette", [("unique", "Q"), ("num_ents", "H")])
KEY_CODE = Layout("SpiceMsgcKeyCode", [("code", "I")])
KEY_MODIFIERS = Layout("SpiceMsgcKeyModifiers", [("modifiers", "H")])
MOUSE_MOTION = Layout("SpiceMsgcMouseMotion", [("dx", "i"), ("dy", "i"), ("buttons_state", "H")])
MOUSE_POSITION = Layout("SpiceMsgcMousePosition", [("x", "I"), ("y", "I"), ("buttons_state", "H"),
                                                   ("display_id", "B")])
MOUSE_BUTTON = Layout("SpiceMsgcMouseButton", [("button", "B"), ("buttons_state", "H")])
INPUTS_INIT = Layout("SpiceMsgInputsInit", [("keyboard_modifiers", "H")])
