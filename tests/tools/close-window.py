#!/usr/bin/python3
"""Asks every top-level window titled TITLE to close, as a window manager's close button does:
a WM_DELETE_WINDOW client message (the app decides what closing means).

usage: DISPLAY=:N close-window.py TITLE    exit 1 if no such window"""
import sys

from Xlib import X, display, protocol

title = sys.argv[1]
d = display.Display()
protocols = d.intern_atom("WM_PROTOCOLS")
delete = d.intern_atom("WM_DELETE_WINDOW")
sent = 0
for w in d.screen().root.query_tree().children:
    try:
        if w.get_wm_name() != title or delete not in (w.get_wm_protocols() or []):
            continue
    except Exception:
        continue
    ev = protocol.event.ClientMessage(window=w, client_type=protocols, data=(32, [delete, X.CurrentTime, 0, 0, 0]))
    w.send_event(ev, event_mask=X.NoEventMask)
    sent += 1
d.flush()
sys.exit(0 if sent else 1)
