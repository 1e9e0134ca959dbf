//! The smallest zbmd program: a runtime, one actor, a few messages, a call.
//!
//! Run with `cargo run --example hello_actor`.

use std::time::Duration;

use zbmd_rt::{Actor, ActorError, Context, ReplyTo, Runtime};

/// Greets whoever it is told about, and counts them.
struct Greeter {
    greeted: u64,
}

enum Msg {
    Greet(String),
    HowMany(ReplyTo<u64>),
}

impl Actor for Greeter {
    type Msg = Msg;

    fn started(&mut self, ctx: &mut Context<'_, Self>) -> Result<(), ActorError> {
        println!("greeter {} started on shard {}", ctx.id(), ctx.shard());
        Ok(())
    }

    fn handle(&mut self, ctx: &mut Context<'_, Self>, msg: Msg) -> Result<(), ActorError> {
        match msg {
            Msg::Greet(name) => {
                self.greeted += 1;
                println!("hello, {name}! (from shard {})", ctx.shard());
            }
            Msg::HowMany(reply) => {
                reply.reply(self.greeted);
            }
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = Runtime::builder().build()?;
    for place in rt.placement() {
        println!("shard {} runs on cpu {} (NUMA node {})", place.shard, place.cpu, place.numa_node);
    }
    let greeter = rt.spawn(Greeter { greeted: 0 })?;
    for name in ["Ada", "Barbara", "Joe"] {
        greeter.send_timeout(Msg::Greet(name.to_string()), Duration::from_secs(1))?;
    }
    let count = rt.call(&greeter, Msg::HowMany, Duration::from_secs(1))?;
    println!("greeted {count} people");
    rt.shutdown();
    Ok(())
}
