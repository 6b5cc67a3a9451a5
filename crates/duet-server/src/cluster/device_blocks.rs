//! Blocks between devices, shared by every node: `duet:{pool}:dblock:<device>` is the set of
//! devices that device must never meet again, kept for [`BLOCK_TTL`] after its latest block.
//! The pool and room scripts read them ([`DEVICE_BLOCKS_PREFIX`] is their last argument: an
//! entry's `d` appended to it names its set).

use crate::hub::blocks::BLOCK_TTL;

/// Prefix of a device's block set (in the pool's hash slot, as the scripts read it there).
pub const DEVICE_BLOCKS_PREFIX: &str = "duet:{pool}:dblock:";

/// Records a block both ways. KEYS: the two devices' sets. ARGV: the two devices, TTL (s).
pub const BLOCK_SCRIPT: &str = r#"
redis.call('SADD', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"#;

/// The block script's call for devices `a` and `b`.
pub fn block<'a>(script: &'a redis::Script, a: &str, b: &str) -> redis::ScriptInvocation<'a> {
    let mut inv = script.key(format!("{DEVICE_BLOCKS_PREFIX}{a}"));
    inv.key(format!("{DEVICE_BLOCKS_PREFIX}{b}")).arg(a).arg(b).arg(BLOCK_TTL.as_secs());
    inv
}
