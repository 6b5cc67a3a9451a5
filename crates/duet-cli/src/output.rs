//! Printing events: human-readable lines, or one JSON object per line (`--json`).

use std::io::Write;
use std::time::Instant;

use duet_core::call::{CallEvent, CallState};
use duet_core::summary::CallSummary;
use serde_json::{Value, json};

/// Writes event lines to stdout.
pub struct Printer {
    json: bool,
}

impl Printer {
    /// A printer in JSON-lines or text mode.
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    /// Prints one event.
    pub fn line(&mut self, event: &str, fields: Value) {
        let mut obj = json!({ "event": event });
        if let (Some(o), Value::Object(f)) = (obj.as_object_mut(), fields) {
            o.extend(f);
        }
        let text = if self.json {
            obj.to_string()
        } else {
            let rest = obj.as_object().map(|o| {
                o.iter().filter(|(k, _)| *k != "event").map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
            });
            format!("{event}: {}", rest.unwrap_or_default())
        };
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{text}");
        let _ = stdout.flush();
    }

    /// A user-facing notice.
    pub fn notice(&mut self, text: &str) {
        self.line("notice", json!({ "message": text }));
    }

    /// A fatal error (also on stderr).
    pub fn error(&mut self, text: &str) {
        eprintln!("duet: {text}");
        self.line("error", json!({ "message": text }));
    }

    /// The final summary line.
    pub fn summary(&mut self, s: &CallSummary) {
        self.summary_with(s, None);
    }

    /// The final summary line with this process's CPU use during the call, if measured.
    pub fn summary_with(&mut self, s: &CallSummary, cpu: Option<(f64, f64)>) {
        let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
        if let (Some(o), Some((cpu_s, call_s))) = (v.as_object_mut(), cpu) {
            o.insert("cpu_s_during_call".into(), json!(cpu_s));
            o.insert("call_s".into(), json!(call_s));
            o.insert("cpu_per_call_second".into(), json!(cpu_s / call_s.max(0.001)));
        }
        self.line("summary", v);
    }

    /// Prints a call event with the time since `started`.
    pub fn event(&mut self, ev: &CallEvent, started: Instant) {
        let t_ms = started.elapsed().as_millis() as u64;
        let (name, mut fields) = match ev {
            CallEvent::State(s) => {
                let (state, extra) = match s {
                    CallState::Idle => ("idle", json!({})),
                    CallState::Searching => ("searching", json!({})),
                    CallState::WaitingInRoom { code } => ("waiting_in_room", json!({ "room": code })),
                    CallState::Connecting => ("connecting", json!({})),
                    CallState::Connected => ("connected", json!({})),
                    CallState::Reconnecting { side } => {
                        ("reconnecting", json!({ "side": format!("{side:?}").to_lowercase() }))
                    }
                    CallState::Ended { reason } => ("ended", json!({ "reason": reason })),
                };
                let mut f = json!({ "state": state });
                if let (Some(o), Value::Object(e)) = (f.as_object_mut(), extra) {
                    o.extend(e);
                }
                ("state", f)
            }
            CallEvent::Matched { peer, room } => ("matched", json!({ "peer": peer, "room": room })),
            CallEvent::MediaStarted(kind) => ("media_started", json!({ "kind": kind })),
            CallEvent::ChatReceived(text) => ("chat_received", json!({ "text": text })),
            CallEvent::ChatSent { id, text } => ("chat_sent", json!({ "id": id, "text": text })),
            CallEvent::ChatDelivered(id) => ("chat_delivered", json!({ "id": id })),
            CallEvent::ChatUndelivered(id) => ("chat_undelivered", json!({ "id": id })),
            CallEvent::Verify(sas) => ("verify", json!({ "emoji": sas.emoji(), "words": sas.words() })),
            CallEvent::PeerVideo(on) => ("peer_video", json!({ "on": on })),
            CallEvent::Rung { rung, target_kbps, reason } => {
                ("rung", json!({ "rung": rung, "target_kbps": target_kbps, "reason": reason }))
            }
            CallEvent::AudioOnly { on, cause } => ("audio_only", json!({ "on": on, "cause": cause })),
            CallEvent::Quality(q) => ("quality", serde_json::to_value(q).unwrap_or(Value::Null)),
            CallEvent::Stats(s) => ("stats", serde_json::to_value(s).unwrap_or(Value::Null)),
            CallEvent::Notice(text) => ("notice", json!({ "message": text })),
            CallEvent::Recovered(r) => (
                "recovered",
                json!({ "failed": r.failed, "fixed_by": r.fixed_by, "took_ms": r.took.as_millis() as u64 }),
            ),
            CallEvent::Finished(_) => return,
        };
        if let Some(o) = fields.as_object_mut() {
            o.insert("t_ms".into(), t_ms.into());
        }
        self.line(name, fields);
    }
}
