//! Two actors on two shards bounce a counter back and forth, then report
//! the round-trip time. Shows cross-shard messaging, `SpawnOptions`, and
//! an actor asking another for a reply without blocking its shard.
//!
//! Run with `cargo run --release --example ping_pong [round_trips]`.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use zbmd_rt::{Actor, ActorError, ActorRef, Context, Runtime, SpawnOptions};

/// Bounces every ball back until it has made its round trips.
struct Player {
    partner: Option<ActorRef<Ball>>,
    done: Option<mpsc::Sender<u64>>,
}

enum Ball {
    /// Introduces the partner to bounce to.
    Meet(ActorRef<Ball>),
    /// A ball with its remaining round trips.
    Hit(u64),
}

impl Actor for Player {
    type Msg = Ball;

    fn handle(&mut self, _ctx: &mut Context<'_, Self>, ball: Ball) -> Result<(), ActorError> {
        match ball {
            Ball::Meet(partner) => self.partner = Some(partner),
            Ball::Hit(0) => {
                if let Some(done) = &self.done {
                    let _ = done.send(0);
                }
            }
            Ball::Hit(left) => {
                let partner = self.partner.as_ref().ok_or_else(|| ActorError::msg("no partner"))?;
                // The partner handles one ball at a time: its mailbox has room.
                partner.try_send(Ball::Hit(left - 1))?;
            }
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let round_trips: u64 =
        std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(1_000_000);
    let rt = Runtime::builder().build()?;
    let shards = rt.shards(); // two players on two shards, or one on a 1-CPU box
    let (done_tx, done_rx) = mpsc::channel();
    let on = |shard: usize| SpawnOptions {
        shard: Some(shard % shards),
        pinned: true,
        ..SpawnOptions::default()
    };
    let ping = rt.spawn_with(Player { partner: None, done: Some(done_tx) }, on(0))?;
    let pong = rt.spawn_with(Player { partner: None, done: None }, on(1))?;
    ping.try_send(Ball::Meet(pong.clone()))?;
    pong.try_send(Ball::Meet(ping.clone()))?;
    let started = Instant::now();
    // Each round trip is two hits: ping -> pong -> ping.
    ping.try_send(Ball::Hit(round_trips * 2))?;
    done_rx.recv_timeout(Duration::from_secs(600))?;
    let elapsed = started.elapsed();
    println!(
        "{round_trips} round trips between shard {} and shard {}: {:.0} ns per round trip",
        ping.id().shard,
        pong.id().shard,
        elapsed.as_nanos() as f64 / round_trips as f64
    );
    rt.shutdown();
    Ok(())
}
