//! An exhaustive model of the doorbell protocol: every interleaving of the producer's and
//! the consumer's steps, with a store buffer per side (stores become visible later, in
//! order, unless a fence or a locked read-modify-write drains them first: x86's TSO, the
//! reordering that the store-then-load pattern of a doorbell is exposed to).
//!
//! The steps are those of `doorbell.rs` and `Channel`: the producer publishes (`head`),
//! fences, loads the flag, swaps it and rings; the consumer waits on its descriptor, wakes
//! (flag `AWAKE`, wake-up bytes taken), drains a budget of frames (waking itself when the
//! budget is spent), and when the ring is empty sets the flag, fences, looks again and
//! sleeps. The wake-up descriptor is a count of unread bytes, a kernel object that both
//! see at once. Positions are frame counts; a full ring (a producer that spins) is left
//! out: it does not touch the doorbell.
//!
//! Checked in every reachable state: the consumer never waits with frames unread while
//! nothing can wake it (the producer done, no wake-up byte): no lost wake-up. The broken
//! variants (either fence or the re-check left out) must fail the same check, so the model
//! is shown to catch what it claims to. With a hostile producer (any flag value at any
//! time, frames without wake-ups), the consumer's turn stays bounded and it never blocks
//! anywhere but in its wait.

use std::collections::HashSet;

const AWAKE: u8 = 0;
const SLEEPING: u8 = 1;
const HEAD: usize = 0;
const FLAG: usize = 1;

/// Which steps the protocol has.
#[derive(Clone, Copy)]
struct Variant {
    producer_fence: bool,
    consumer_fence: bool,
    recheck: bool,
    hostile: bool,
}

const CORRECT: Variant = Variant {
    producer_fence: true,
    consumer_fence: true,
    recheck: true,
    hostile: false,
};

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum P {
    Publish,
    Fence,
    LoadFlag,
    Swap,
    Ring,
    Done,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum C {
    Wait,
    Wake,
    Clear,
    Pop,
    SelfWake,
    Arm,
    Fence,
    Recheck,
    Disarm,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct State {
    mem: [u8; 2],
    /// Unread wake-up bytes.
    bell: u8,
    p: P,
    sent: u8,
    p_buf: Vec<(usize, u8)>,
    /// Hostile producer: flag writes and rings left.
    scribbles: u8,
    c: C,
    taken: u8,
    /// Frames taken, and steps run, since the consumer last woke (each frame costs at most
    /// six steps: pop, arm, fence, re-check, disarm, pop).
    turn: u8,
    steps: u8,
    spurious: u8,
    c_buf: Vec<(usize, u8)>,
}

struct Model {
    variant: Variant,
    frames: u8,
    budget: u8,
}

fn load(buf: &[(usize, u8)], mem: &[u8; 2], at: usize) -> u8 {
    buf.iter()
        .rev()
        .find(|(l, _)| *l == at)
        .map_or(mem[at], |&(_, v)| v)
}

impl Model {
    fn initial(&self) -> State {
        State {
            mem: [0, SLEEPING],
            bell: 0,
            p: P::Publish,
            sent: 0,
            p_buf: Vec::new(),
            scribbles: if self.variant.hostile { 3 } else { 0 },
            c: C::Wait,
            taken: 0,
            turn: 0,
            steps: 0,
            spurious: 0,
            c_buf: Vec::new(),
        }
    }

    /// Every state one step away.
    fn next(&self, s: &State) -> Vec<State> {
        let mut out = Vec::new();
        // Stores leave the buffers, oldest first.
        if let Some(&(at, v)) = s.p_buf.first() {
            let mut n = s.clone();
            n.p_buf.remove(0);
            n.mem[at] = v;
            out.push(n);
        }
        if let Some(&(at, v)) = s.c_buf.first() {
            let mut n = s.clone();
            n.c_buf.remove(0);
            n.mem[at] = v;
            out.push(n);
        }
        if self.variant.hostile {
            self.hostile(s, &mut out);
        } else {
            self.producer(s, &mut out);
        }
        self.consumer(s, &mut out);
        out
    }

    fn producer(&self, s: &State, out: &mut Vec<State>) {
        let mut n = s.clone();
        match s.p {
            P::Publish if s.sent == self.frames => n.p = P::Done,
            P::Publish => {
                n.sent += 1;
                n.p_buf.push((HEAD, n.sent));
                n.p = if self.variant.producer_fence {
                    P::Fence
                } else {
                    P::LoadFlag
                };
            }
            P::Fence if !s.p_buf.is_empty() => return,
            P::Fence => n.p = P::LoadFlag,
            P::LoadFlag => {
                let seen = load(&s.p_buf, &s.mem, FLAG);
                n.p = if seen != AWAKE { P::Swap } else { P::Publish };
            }
            // A locked instruction: the buffer drains first.
            P::Swap if !s.p_buf.is_empty() => return,
            P::Swap => {
                let old = s.mem[FLAG];
                n.mem[FLAG] = AWAKE;
                n.p = if old != AWAKE { P::Ring } else { P::Publish };
            }
            P::Ring => {
                n.bell += 1;
                n.p = P::Publish;
            }
            P::Done => return,
        }
        out.push(n);
    }

    /// A producer that publishes without ringing, and writes any flag value, or rings, at
    /// any time.
    fn hostile(&self, s: &State, out: &mut Vec<State>) {
        if s.sent < self.frames {
            let mut n = s.clone();
            n.sent += 1;
            n.mem[HEAD] = n.sent;
            out.push(n);
        }
        if s.scribbles > 0 {
            for v in [AWAKE, SLEEPING, 0xa5] {
                let mut n = s.clone();
                n.scribbles -= 1;
                n.mem[FLAG] = v;
                out.push(n);
            }
            let mut n = s.clone();
            n.scribbles -= 1;
            n.bell += 1;
            out.push(n);
        }
    }

    fn consumer(&self, s: &State, out: &mut Vec<State>) {
        let mut n = s.clone();
        n.steps += 1;
        match s.c {
            C::Wait => {
                // Woken by its descriptor, or by something else (a timer): once.
                let woken = [s.bell > 0, s.spurious == 0];
                for (i, _) in woken.iter().enumerate().filter(|(_, w)| **w) {
                    let mut n = s.clone();
                    n.spurious += u8::from(i == 1);
                    n.c = C::Wake;
                    n.turn = 0;
                    n.steps = 0;
                    out.push(n);
                }
                return;
            }
            C::Wake => {
                if load(&s.c_buf, &s.mem, FLAG) != AWAKE {
                    n.c_buf.push((FLAG, AWAKE));
                }
                n.c = C::Clear;
            }
            C::Clear => {
                n.bell = 0;
                n.c = C::Pop;
            }
            C::Pop => {
                let head = load(&s.c_buf, &s.mem, HEAD);
                if s.taken < head {
                    n.taken += 1;
                    n.turn += 1;
                    n.c = if n.turn == self.budget {
                        C::SelfWake
                    } else {
                        C::Pop
                    };
                } else {
                    n.c = C::Arm;
                }
            }
            C::SelfWake => {
                n.bell += 1;
                n.c = C::Wait;
            }
            C::Arm => {
                n.c_buf.push((FLAG, SLEEPING));
                n.c = match (self.variant.consumer_fence, self.variant.recheck) {
                    (_, false) => C::Wait,
                    (true, true) => C::Fence,
                    (false, true) => C::Recheck,
                };
            }
            C::Fence if !s.c_buf.is_empty() => return,
            C::Fence => n.c = C::Recheck,
            C::Recheck => {
                let head = load(&s.c_buf, &s.mem, HEAD);
                n.c = if s.taken < head { C::Disarm } else { C::Wait };
            }
            C::Disarm => {
                n.c_buf.push((FLAG, AWAKE));
                n.c = C::Pop;
            }
        }
        out.push(n);
    }

    /// Explores every reachable state; returns how many, or the first bad one.
    fn check(&self) -> Result<usize, String> {
        let mut seen = HashSet::new();
        let mut stack = vec![self.initial()];
        while let Some(s) = stack.pop() {
            if !seen.insert(s.clone()) {
                continue;
            }
            let waits = s.c == C::Wait;
            if !self.variant.hostile {
                let silent = s.p == P::Done && s.p_buf.is_empty() && s.bell == 0;
                if waits && silent && s.taken < self.frames {
                    return Err(format!("lost wake-up: {s:?}"));
                }
            }
            if s.steps > 6 * self.budget + 8 {
                return Err(format!("a turn that does not end: {s:?}"));
            }
            let next = self.next(&s);
            let consumer_moves = next.iter().any(|n| n.c != s.c || n.steps != s.steps);
            if !waits && !consumer_moves && s.c_buf.is_empty() {
                return Err(format!("the consumer blocks outside its wait: {s:?}"));
            }
            if next.is_empty() && s.taken < self.frames && !self.variant.hostile {
                return Err(format!("stuck: {s:?}"));
            }
            stack.extend(next);
        }
        Ok(seen.len())
    }
}

fn check(variant: Variant, frames: u8, budget: u8) -> Result<usize, String> {
    Model {
        variant,
        frames,
        budget,
    }
    .check()
}

#[test]
fn no_wake_up_is_lost_in_any_interleaving() {
    for frames in 1..=4 {
        for budget in 1..=3 {
            let states = check(CORRECT, frames, budget).unwrap();
            assert!(
                states > 100,
                "{frames} frames, budget {budget}: {states} states"
            );
        }
    }
}

#[test]
fn the_model_finds_the_lost_wake_up_without_either_fence_or_the_recheck() {
    let broken = [
        Variant {
            producer_fence: false,
            ..CORRECT
        },
        Variant {
            consumer_fence: false,
            ..CORRECT
        },
        Variant {
            recheck: false,
            ..CORRECT
        },
    ];
    for variant in broken {
        let found = check(variant, 2, 2).unwrap_err();
        assert!(found.starts_with("lost wake-up"), "{found}");
    }
}

#[test]
fn a_hostile_producer_cannot_make_the_consumer_spin_or_block() {
    for budget in 1..=3 {
        check(
            Variant {
                hostile: true,
                ..CORRECT
            },
            3,
            budget,
        )
        .unwrap();
    }
}
