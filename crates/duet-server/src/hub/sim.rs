//! A service of several clustered hubs on simulated time, with the Redis they share simulated
//! too, for tests of what crosses nodes (see `crate::cluster` for the real thing):
//!
//! - each node's inbox is a stream of numbered entries. Its reader ([`Service::read`]) writes
//!   the read marker first and then takes every newer entry, in order, as
//!   `crate::cluster::read_inbox` does, so the marker lags one read behind;
//! - each node's messages for other nodes wait in its sender's queue until [`Service::send`]
//!   writes them, in order; the salvages among them run after the others are written, as
//!   `directory::SALVAGE_SCRIPT` does in `crate::cluster::send_remote`;
//! - each node's pool requests wait until [`Service::store`] runs them: the session directory,
//!   and a pool that pairs two waiting sessions.
//!
//! Nothing moves by itself: a test chooses the interleaving that real nodes leave to chance.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use duet_proto::{ClientFrame, ClientMessage, ServerFrame, ServerMessage, SignalPayload, parse_server_frame};

use super::cluster::{Claimed, PoolEntry, PoolMatch, PoolOp, RemoteMsg};
use super::token::TokenKey;
use super::{ConnId, Hub, HubConfig, Input, Now, Output};

/// One node of the simulated service.
pub(super) struct SimNode {
    pub hub: Hub,
    /// What the hub sent its clients.
    pub frames: Vec<(ConnId, ServerFrame)>,
    /// Its messages for other nodes, not yet written to Redis.
    outbox: VecDeque<(String, RemoteMsg)>,
    /// Its pool requests, not yet run.
    pool: VecDeque<PoolOp>,
    /// Its inbox stream: entry id, message.
    inbox: Vec<(u64, RemoteMsg)>,
    /// The last entry its reader gave the hub.
    read: u64,
    /// The read marker as Redis holds it.
    marker: u64,
    /// The process was killed: it does nothing any more (its heartbeat may still run).
    killed: bool,
    /// Its heartbeat runs.
    pub beating: bool,
}

/// The simulated service. See the module docs.
pub(super) struct Service {
    pub nodes: BTreeMap<String, SimNode>,
    now: Instant,
    unix: u64,
    next_entry: u64,
    /// The session directory: session -> node.
    home: HashMap<String, String>,
    /// The pool: waiting entries, longest waiting first.
    waiting: Vec<PoolEntry>,
    key: TokenKey,
    /// Salvages' answers are held in [`Service::answers`] until a test delivers them (the real
    /// node runs each salvage on a task of its own, so their answers may come in any order).
    pub hold_salvage_answers: bool,
    /// Salvages that ran, whose answers the hubs have not had yet: node, answer.
    pub answers: Vec<(String, Input)>,
}

impl Service {
    /// Nodes with these addresses, sharing one resume secret.
    pub fn new(names: &[&str]) -> Self {
        let key = TokenKey::new(b"one secret for the simulated service".to_vec());
        let mut nodes = BTreeMap::new();
        for (i, name) in names.iter().enumerate() {
            let cfg = HubConfig {
                rng_seed: Some(11 + i as u64),
                idle_timeout: Duration::from_secs(3600),
                cluster_node: Some(name.to_string()),
                resume_key: Some(key.clone()),
                ..HubConfig::default()
            };
            let node = SimNode {
                hub: Hub::new(cfg, "test"),
                frames: Vec::new(),
                outbox: VecDeque::new(),
                pool: VecDeque::new(),
                inbox: Vec::new(),
                read: 0,
                marker: 0,
                killed: false,
                beating: true,
            };
            nodes.insert(name.to_string(), node);
        }
        Self {
            nodes,
            now: Instant::now(),
            unix: 1_700_000_000,
            next_entry: 1,
            home: HashMap::new(),
            waiting: Vec::new(),
            key,
            hold_salvage_answers: false,
            answers: Vec::new(),
        }
    }

    fn now(&self) -> Now {
        Now { mono: self.now, unix_secs: self.unix }
    }

    fn node(&mut self, name: &str) -> &mut SimNode {
        self.nodes.get_mut(name).unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Feeds `input` to the hub of `node` and collects what it emits.
    pub fn input(&mut self, node: &str, input: Input) {
        let now = self.now();
        let n = self.node(node);
        if n.killed {
            return;
        }
        n.hub.handle(now, input);
        Self::drain(n);
    }

    fn drain(n: &mut SimNode) {
        while let Some(out) = n.hub.poll_output() {
            match out {
                Output::Send { conn, text } => n.frames.push((conn, parse_server_frame(&text).unwrap())),
                Output::Close { .. } => {}
                Output::Pool(op) => n.pool.push_back(*op),
                Output::Remote { node, msg } => n.outbox.push_back((node, *msg)),
            }
        }
    }

    /// Moves time on by `d`, running every node's timers due meanwhile.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let due = self
                .nodes
                .iter()
                .filter(|(_, n)| !n.killed)
                .filter_map(|(name, n)| Some((n.hub.poll_timeout()?, name.clone())))
                .filter(|(at, _)| *at <= end)
                .min();
            let Some((at, name)) = due else { break };
            self.now = self.now.max(at);
            let now = self.now();
            let n = self.node(&name);
            n.hub.handle_timeout(now);
            Self::drain(n);
        }
        self.now = end;
        self.unix += d.as_secs();
    }

    /// Runs the pool requests `node` emitted so far, in order.
    pub fn store(&mut self, node: &str) {
        while let Some(op) = self.node(node).pool.pop_front() {
            match op {
                PoolOp::Claim { session, partner } => {
                    let previous = self.home.insert(session.clone(), node.to_string());
                    let partner_node = partner.and_then(|p| self.home.get(&p).cloned());
                    let claimed = Claimed { session, previous, partner_node, ended: false };
                    self.input(node, Input::Claimed(Box::new(claimed)));
                }
                PoolOp::Release { session } if self.home.get(&session).map(String::as_str) == Some(node) => {
                    self.home.remove(&session);
                }
                PoolOp::Join(entry) => {
                    self.waiting.retain(|e| e.session != entry.session);
                    if self.waiting.is_empty() {
                        self.waiting.push(entry);
                    } else {
                        let first = self.waiting.remove(0);
                        self.paired(node, PoolMatch { room: "r-000000000001".into(), first, second: entry });
                    }
                }
                PoolOp::Leave { session } => self.waiting.retain(|e| e.session != session),
                _ => {}
            }
        }
    }

    /// The pool paired two sessions for `node`'s request: the partner's node hears first.
    fn paired(&mut self, node: &str, m: PoolMatch) {
        for side in [&m.first, &m.second] {
            if side.node != node {
                self.node(node).outbox.push_back((side.node.clone(), RemoteMsg::Matched(Box::new(m.clone()))));
            }
        }
        self.input(node, Input::PoolMatched(Box::new(m)));
    }

    /// Writes what `node`'s sender holds to the other nodes' inboxes, in order, then runs the
    /// salvages among them.
    pub fn send(&mut self, node: &str) {
        let batch: Vec<(String, RemoteMsg)> = self.node(node).outbox.drain(..).collect();
        let mut salvages = Vec::new();
        for (to, msg) in batch {
            match msg {
                RemoteMsg::Salvage { session, force } => salvages.push((to, session, force)),
                msg => {
                    let id = self.next_entry;
                    self.next_entry += 1;
                    self.node(&to).inbox.push((id, msg));
                }
            }
        }
        for (from, session, force) in salvages {
            let old = self.node(&from);
            let answer = if old.beating && !force {
                Input::Salvaged { session, messages: Vec::new(), node_alive: true }
            } else {
                let marker = old.marker;
                let (taken, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut old.inbox)
                    .into_iter()
                    .partition(|(id, m)| *id > marker && matches!(m, RemoteMsg::Peer { to, .. } if *to == session));
                old.inbox = kept;
                let messages = taken.into_iter().map(|(_, m)| m).collect();
                Input::Salvaged { session, messages, node_alive: false }
            };
            if self.hold_salvage_answers {
                self.answers.push((node.to_string(), answer));
            } else {
                self.input(node, answer);
            }
        }
    }

    /// Gives its hub the `i`-th of the salvage answers held back (see
    /// [`Service::hold_salvage_answers`]).
    pub fn answer(&mut self, i: usize) {
        let (node, answer) = self.answers.remove(i);
        self.input(&node, answer);
    }

    /// `node`'s reader: the marker first, then every newer entry, in order.
    pub fn read(&mut self, node: &str) {
        let n = self.node(node);
        if n.killed {
            return;
        }
        n.marker = n.read;
        let from = n.read;
        let entries: Vec<(u64, RemoteMsg)> = n.inbox.iter().filter(|(id, _)| *id > from).cloned().collect();
        for (id, msg) in entries {
            self.node(node).read = id;
            self.input(node, Input::Remote(msg));
        }
    }

    /// Every live node runs its pool requests, sends and reads until nothing moves any more.
    pub fn settle(&mut self) {
        self.settle_inner(None);
    }

    /// [`Service::settle`] with `stalled`'s sender stuck (the node still reads, and runs its
    /// pool requests).
    pub fn settle_except(&mut self, stalled: &str) {
        self.settle_inner(Some(stalled));
    }

    fn settle_inner(&mut self, stalled: Option<&str>) {
        for _ in 0..100 {
            let names: Vec<String> = self.nodes.iter().filter(|(_, n)| !n.killed).map(|(k, _)| k.clone()).collect();
            let busy = names.iter().any(|name| {
                let n = &self.nodes[name];
                let sends = !n.outbox.is_empty() && stalled != Some(name.as_str());
                !n.pool.is_empty() || sends || n.inbox.iter().any(|(id, _)| *id > n.read)
            });
            for name in &names {
                self.store(name);
                if stalled != Some(name.as_str()) {
                    self.send(name);
                }
                self.read(name);
            }
            if !busy {
                return;
            }
        }
        panic!("the service never settles");
    }

    /// `node`'s process dies: it does nothing any more (its heartbeat runs until it is over).
    pub fn kill(&mut self, node: &str) {
        let n = self.node(node);
        n.killed = true;
        n.outbox.clear();
        n.pool.clear();
    }

    /// `node`'s heartbeat is over, and every other node has noticed.
    pub fn heartbeat_over(&mut self, node: &str) {
        self.node(node).beating = false;
        let others: Vec<String> = self.nodes.keys().filter(|n| *n != node).cloned().collect();
        for other in others {
            self.input(&other, Input::NodeDown(node.to_string()));
        }
    }

    /// A client frame from `conn` on `node`.
    pub fn frame(&mut self, node: &str, conn: ConnId, frame: ClientFrame) {
        self.input(node, Input::Frame(conn, frame));
    }

    /// A message from `conn` on `node`.
    pub fn msg(&mut self, node: &str, conn: ConnId, msg: ClientMessage) {
        self.frame(node, conn, ClientFrame::new(msg));
    }

    /// A new session on `node`, on `conn`: its public id.
    pub fn connect(&mut self, node: &str, conn: u64) -> (ConnId, String) {
        let conn = ConnId(conn);
        self.input(node, Input::Opened(conn));
        self.msg(node, conn, ClientMessage::Hello { version: 1, resume_token: None, client: None });
        let id = self.nodes[node]
            .frames
            .iter()
            .find_map(|(c, f)| match &f.msg {
                ServerMessage::Welcome { session_id, .. } if *c == conn => Some(session_id.clone()),
                _ => None,
            })
            .unwrap();
        (conn, id)
    }

    /// A client on `node`, on `conn`, says `hello` with `token`, acknowledging `ack`.
    pub fn hello(&mut self, node: &str, conn: u64, token: String, ack: Option<u64>) -> ConnId {
        let conn = ConnId(conn);
        self.input(node, Input::Opened(conn));
        let hello = ClientMessage::Hello { version: 1, resume_token: Some(token), client: None };
        self.frame(node, conn, ClientFrame { id: None, ack, msg: hello });
        conn
    }

    /// Pairs `x` (on node `a`) with `y` (on node `b`) through the pool: `x` waited longer.
    pub fn pair(&mut self, (a, x): (&str, ConnId), (b, y): (&str, ConnId)) {
        self.msg(a, x, ClientMessage::JoinQueue { interests: vec![], language: None });
        self.settle();
        self.msg(b, y, ClientMessage::JoinQueue { interests: vec![], language: None });
        self.settle();
        for (node, conn) in [(a, x), (b, y)] {
            assert!(self.kinds(node, conn).contains(&"matched"), "{node}: {:?}", self.kinds(node, conn));
        }
    }

    /// Signal number `n` (its `generation`) from `conn` on `node`.
    pub fn signal(&mut self, node: &str, conn: ConnId, n: u32) {
        self.msg(node, conn, ClientMessage::Signal { payload: SignalPayload::Restart, generation: Some(n) });
    }

    /// The numbers of the signals `conn` on `node` got, in order.
    pub fn signals(&self, node: &str, conn: ConnId) -> Vec<u32> {
        self.nodes[node]
            .frames
            .iter()
            .filter(|(c, _)| *c == conn)
            .filter_map(|(_, f)| match f.msg {
                ServerMessage::Signal { generation, .. } => Some(generation.unwrap_or(0)),
                _ => None,
            })
            .collect()
    }

    /// The `seq` of the frame that carried signal `n` to `conn` on `node`.
    pub fn seq_of_signal(&self, node: &str, conn: ConnId, n: u32) -> u64 {
        self.nodes[node]
            .frames
            .iter()
            .find(|(c, f)| *c == conn && matches!(f.msg, ServerMessage::Signal { generation: Some(g), .. } if g == n))
            .map(|(_, f)| f.seq)
            .unwrap_or_else(|| panic!("signal {n} never reached {conn:?} on {node}"))
    }

    /// The kinds of message `conn` on `node` got, in order.
    pub fn kinds(&self, node: &str, conn: ConnId) -> Vec<&'static str> {
        self.nodes[node].frames.iter().filter(|(c, _)| *c == conn).map(|(_, f)| f.msg.kind()).collect()
    }

    /// The newest resume token `conn` on `node` got.
    pub fn token(&self, node: &str, conn: ConnId) -> String {
        let token = self.nodes[node].frames.iter().rev().find_map(|(c, f)| match &f.msg {
            ServerMessage::Token { resume_token } | ServerMessage::Welcome { resume_token, .. } if *c == conn => {
                Some(resume_token.clone())
            }
            _ => None,
        });
        let token = token.unwrap_or_else(|| panic!("no token for {conn:?} on {node}"));
        assert!(self.key.verify(&token).is_some());
        token
    }

    /// The `seq` of the newest frame `conn` on `node` got.
    pub fn last_seq(&self, node: &str, conn: ConnId) -> u64 {
        self.nodes[node].frames.iter().rev().find(|(c, _)| *c == conn).map(|(_, f)| f.seq).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::handover::{HANDOVER_WAIT, MAX_HANDOVER_HELD, SALVAGE_WAIT};

    /// x on node a, paired with y on node b (x waited longer); both have their tokens.
    fn x_on_a_paired_with_y_on_b() -> (Service, ConnId, ConnId) {
        let mut s = Service::new(&["a", "b", "c"]);
        let (x, _) = s.connect("a", 1);
        let (y, _) = s.connect("b", 2);
        s.pair(("a", x), ("b", y));
        (s, x, y)
    }

    #[test]
    fn a_session_moved_from_a_live_node_gets_its_partners_signals_once_and_in_order() {
        let (mut s, x, y) = x_on_a_paired_with_y_on_b();
        // y signals 1 and 2: x gets both on node a and processes the first only.
        s.signal("b", y, 1);
        s.signal("b", y, 2);
        s.settle();
        assert_eq!(s.signals("a", x), [1, 2]);
        let ack = s.seq_of_signal("a", x, 1);
        // y signals 3: it waits in node a's inbox.
        s.signal("b", y, 3);
        s.send("b");
        // x's token is used on node c while x is still on node a, acknowledging signal 1: node
        // c takes the session (Taken to a) and asks y's node to rejoin it.
        let token = s.token("a", x);
        let x2 = s.hello("c", 10, token, Some(ack));
        s.store("c");
        s.send("c");
        // y signals 4 before node b hears of the move: it goes to node a too, behind the Taken.
        s.signal("b", y, 4);
        s.send("b");
        // Node a reads 3 (its copy of x gets it), the Taken (2 and 3 go to node c, unprocessed)
        // and 4 (forwarded to node c); its sender is slow.
        s.read("a");
        // Node b switches y to node c; y's 5 and 6 go straight there.
        s.read("b");
        s.signal("b", y, 5);
        s.signal("b", y, 6);
        s.send("b");
        // Node c hears all that from node b before anything from node a.
        s.read("c");
        s.store("c");
        s.send("c");
        s.send("a");
        s.settle();
        s.advance(Duration::from_secs(10));
        s.settle();
        assert_eq!(s.signals("c", x2), [2, 3, 4, 5, 6], "once each, in the order y sent them");
        assert_eq!(s.kinds("c", x2).iter().filter(|k| **k == "peer_resumed").count(), 1);
    }

    #[test]
    fn a_salvage_from_a_live_node_repeats_nothing_it_forwarded() {
        let (mut s, x, y) = x_on_a_paired_with_y_on_b();
        s.signal("b", y, 1);
        s.settle();
        // x processed everything; its token is used on node c.
        let (token, ack) = (s.token("a", x), s.last_seq("a", x));
        let x2 = s.hello("c", 10, token, Some(ack));
        s.store("c");
        s.send("c");
        s.read("a");
        // y signals 2 and 3 before node b hears of the move: node a reads them and forwards
        // them, but its sender is slow, and its read marker still lies before them.
        s.signal("b", y, 2);
        s.signal("b", y, 3);
        s.send("b");
        s.read("a");
        // Node b switches y to node c; y's 4 goes straight there.
        s.read("b");
        s.signal("b", y, 4);
        s.send("b");
        s.read("c");
        s.store("c");
        s.send("c");
        // Node a's sender stays stuck for a while, then catches up.
        s.advance(Duration::from_secs(3));
        s.store("c");
        s.send("c");
        s.send("a");
        s.settle();
        s.advance(Duration::from_secs(10));
        s.settle();
        assert_eq!(s.signals("c", x2), [2, 3, 4], "once each, in the order y sent them");
    }

    #[test]
    fn a_session_moved_from_a_live_node_to_its_partners_node_gets_the_old_nodes_messages_first() {
        let mut s = Service::new(&["a", "c"]);
        let (x, _) = s.connect("a", 1);
        let (y, _) = s.connect("c", 2);
        s.pair(("a", x), ("c", y));
        // y signals 1 and 2: x gets them on node a and processes the first only.
        s.signal("c", y, 1);
        s.signal("c", y, 2);
        s.settle();
        let ack = s.seq_of_signal("a", x, 1);
        // y signals 3: node a reads it for x (its read marker still lies before it).
        s.signal("c", y, 3);
        s.send("c");
        s.read("a");
        // x's token is used on node c, y's node: the pair is whole there at once.
        let token = s.token("a", x);
        let x2 = s.hello("c", 10, token, Some(ack));
        s.store("c");
        // y signals 4 on node c before node a has handed anything over.
        s.signal("c", y, 4);
        s.send("c");
        s.settle();
        s.advance(Duration::from_secs(10));
        s.settle();
        assert_eq!(s.signals("c", x2), [2, 3, 4], "once each, in the order y sent them");
    }

    /// x on node a, paired with y on node b, has processed everything; y signals 1; node a is
    /// killed and y signals 2 and 3 into its inbox (node b cannot know yet). Returns x's token.
    fn x_on_a_killed_with_2_and_3_unread() -> (Service, ConnId, String) {
        let (mut s, x, y) = x_on_a_paired_with_y_on_b();
        s.signal("b", y, 1);
        s.settle();
        s.kill("a");
        s.signal("b", y, 2);
        s.signal("b", y, 3);
        s.send("b");
        let token = s.token("a", x);
        (s, y, token)
    }

    #[test]
    fn a_session_moved_from_a_killed_node_that_still_beats_gets_what_it_never_read_after_the_wait() {
        let (mut s, y, token) = x_on_a_killed_with_2_and_3_unread();
        // x is back on node c before node a's heartbeat runs out; y's node switches to c, and
        // y's 4 goes straight there: it waits for node a, which may be alive.
        let x2 = s.hello("c", 10, token, None);
        s.settle();
        s.signal("b", y, 4);
        s.settle();
        assert_eq!(s.signals("c", x2), [] as [u32; 0]);
        // Node a does not answer in time: what it never read is taken from its inbox, and
        // delivered before what waited.
        s.advance(HANDOVER_WAIT - Duration::from_millis(1));
        s.settle();
        assert_eq!(s.signals("c", x2), [] as [u32; 0]);
        s.advance(Duration::from_millis(1));
        s.settle();
        assert_eq!(s.signals("c", x2), [2, 3, 4]);
        s.signal("b", y, 5);
        s.settle();
        assert_eq!(s.signals("c", x2), [2, 3, 4, 5]);
    }

    #[test]
    fn the_wait_for_a_killed_node_ends_when_its_heartbeat_runs_out() {
        let (mut s, y, token) = x_on_a_killed_with_2_and_3_unread();
        let x2 = s.hello("c", 10, token, None);
        s.settle();
        s.signal("b", y, 4);
        s.settle();
        // Node a's heartbeat runs out (long before the wait would): nothing waits any more.
        s.heartbeat_over("a");
        s.settle();
        assert_eq!(s.signals("c", x2), [2, 3, 4]);
    }

    #[test]
    fn a_session_moved_from_a_node_whose_heartbeat_is_over_waits_for_nothing() {
        let (mut s, y, token) = x_on_a_killed_with_2_and_3_unread();
        s.heartbeat_over("a");
        // y's 4 waits on node b for its partner, which comes back on node c.
        s.signal("b", y, 4);
        let x2 = s.hello("c", 10, token, None);
        s.settle();
        assert_eq!(s.signals("c", x2), [2, 3, 4], "no wait for a node known to be dead");
    }

    #[test]
    fn what_an_old_node_slower_than_the_wait_sends_late_is_never_given_after_something_newer() {
        let (mut s, x, y) = x_on_a_paired_with_y_on_b();
        // y signals 1 and 2; x gets them on node a and processes neither.
        let ack = s.last_seq("a", x);
        s.signal("b", y, 1);
        s.signal("b", y, 2);
        s.settle();
        let token = s.token("a", x);
        let x2 = s.hello("c", 10, token, Some(ack));
        s.store("c");
        s.send("c");
        // Node a reads the Taken (1 and 2 are to go to node c again) but its sender stalls.
        s.read("a");
        s.settle_except("a");
        s.signal("b", y, 3);
        s.settle_except("a");
        s.advance(HANDOVER_WAIT);
        s.settle_except("a");
        assert_eq!(s.signals("c", x2), [3], "the wait is over: 3 is delivered");
        // Node a's sender catches up: its replay of 1 and 2 is older than 3, and dropped.
        s.settle();
        s.advance(Duration::from_secs(10));
        s.settle();
        assert_eq!(s.signals("c", x2), [3], "never older after newer, never twice");
    }

    #[test]
    fn what_a_dead_nodes_inbox_held_comes_first_whichever_salvage_answers_first() {
        // As in `tests/cluster.rs`: node a is killed with y's 2 in its inbox; node b notices
        // first (y hears peer_reconnecting and its 3 waits there), x comes back on node c.
        let (mut s, x, y) = x_on_a_paired_with_y_on_b();
        s.signal("b", y, 1);
        s.settle();
        let token = s.token("a", x);
        s.kill("a");
        s.signal("b", y, 2);
        s.send("b");
        s.node("a").beating = false;
        s.input("b", Input::NodeDown("a".into()));
        s.signal("b", y, 3);
        s.hold_salvage_answers = true;
        let x2 = s.hello("c", 10, token, None);
        s.settle();
        // Node c's handover asked for a salvage of node a's inbox, which took 2; then node c
        // notices node a's heartbeat is over and forces one more, which finds nothing.
        s.input("c", Input::NodeDown("a".into()));
        s.settle();
        assert_eq!(s.answers.len(), 2);
        assert_eq!(s.signals("c", x2), [] as [u32; 0], "3 waits for what node a held");
        // The empty answer reaches the hub first.
        s.answer(1);
        assert_eq!(s.signals("c", x2), [] as [u32; 0], "3 still waits: a salvage is out");
        s.answer(0);
        s.settle();
        assert_eq!(s.signals("c", x2), [2, 3], "once each, in the order y sent them");
    }

    #[test]
    fn a_salvage_never_answered_holds_what_waits_for_a_salvage_wait_at_most() {
        let (mut s, y, token) = x_on_a_killed_with_2_and_3_unread();
        s.hold_salvage_answers = true;
        let x2 = s.hello("c", 10, token, None);
        s.settle();
        s.signal("b", y, 4);
        s.settle();
        // The first salvage's answer never comes (say its request was refused). Node a does not
        // hand x over in time: the forced salvage takes 2 and 3, delivered at once; 4 waits
        // for the first salvage.
        s.advance(HANDOVER_WAIT);
        s.settle();
        s.answer(1);
        assert_eq!(s.signals("c", x2), [2, 3]);
        s.advance(SALVAGE_WAIT - Duration::from_millis(1));
        s.settle();
        assert_eq!(s.signals("c", x2), [2, 3]);
        s.advance(Duration::from_millis(1));
        s.settle();
        assert_eq!(s.signals("c", x2), [2, 3, 4], "waited for no longer");
        s.answer(0);
        s.signal("b", y, 5);
        s.settle();
        assert_eq!(s.signals("c", x2), [2, 3, 4, 5]);
    }

    #[test]
    fn a_handover_that_holds_too_much_ends_its_wait() {
        let (mut s, y, token) = x_on_a_killed_with_2_and_3_unread();
        let x2 = s.hello("c", 10, token, None);
        s.settle();
        let n = MAX_HANDOVER_HELD as u32;
        for i in 0..n - 1 {
            s.signal("b", y, 100 + i);
        }
        s.settle();
        assert_eq!(s.signals("c", x2), [] as [u32; 0], "still waiting for node a");
        s.signal("b", y, 100 + n - 1);
        s.settle();
        let got = s.signals("c", x2);
        assert_eq!(got.len(), n as usize, "what waited is delivered, without node a's");
        assert!(got.windows(2).all(|w| w[0] < w[1]));
        // What node a never read (2 and 3) is lost: it would come after newer messages.
        s.advance(HANDOVER_WAIT);
        s.settle();
        assert_eq!(s.signals("c", x2), got);
    }
}
