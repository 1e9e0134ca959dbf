//! The API shapes of issue 15: interval timers for messages that are not
//! `Clone`, asks whose reply closure carries a request id, `ActorError`
//! through `?` into `Box<dyn Error>`, a cloneable `RuntimeHandle`, and the
//! placement of supervised children on shards.

use std::error::Error;
use std::sync::mpsc;
use std::time::Duration;

use zbmd_rt::supervisor::{ChildPlacement, ChildSpec, Supervisor, SupervisorError, SupervisorSpec};
use zbmd_rt::topology::{L3Scope, SyntheticSpec, Topology};
use zbmd_rt::{
    Actor, ActorError, ActorId, ActorRef, AskError, Context, ExitError, ExitReason, ReplyTo,
    Runtime, RuntimeError, RuntimeHandle, SpawnOptions,
};

/// Long enough never to be the reason a test fails on a loaded machine.
const T: Duration = Duration::from_secs(30);

/// An unpinned runtime on a modelled 4-CPU machine, so that 4 shards fit
/// on a machine with fewer CPUs.
fn runtime(shards: usize) -> Runtime {
    let spec = SyntheticSpec {
        packages: 1,
        numa_per_package: 1,
        cores_per_numa: 4,
        threads_per_core: 1,
        l3_per: L3Scope::Package,
    };
    let topology = Topology::synthetic(&spec).expect("topology");
    Runtime::builder()
        .allowed_cpus(topology.cpus())
        .topology(topology)
        .shards(shards)
        .pin(false)
        .build()
        .expect("runtime")
}

// ---- send_interval with a message factory ----

/// Not `Clone`: it carries a `ReplyTo`.
enum Ticking {
    Tick(u32),
    After(u32, ReplyTo<Vec<u32>>),
}

#[derive(Default)]
struct Ticker {
    seen: Vec<u32>,
    waiting: Option<(u32, ReplyTo<Vec<u32>>)>,
}

impl Actor for Ticker {
    type Msg = Ticking;

    fn started(&mut self, ctx: &mut Context<'_, Self>) -> Result<(), ActorError> {
        let me = ctx.myself();
        let mut n = 0;
        // The factory keeps state between ticks: each tick is numbered.
        ctx.send_interval(
            &me,
            move || {
                n += 1;
                Ticking::Tick(n)
            },
            Duration::from_millis(1),
        )?;
        Ok(())
    }

    fn handle(&mut self, _: &mut Context<'_, Self>, msg: Ticking) -> Result<(), ActorError> {
        match msg {
            Ticking::Tick(n) => self.seen.push(n),
            Ticking::After(count, reply) => self.waiting = Some((count, reply)),
        }
        if let Some((count, _)) = &self.waiting {
            if self.seen.len() >= *count as usize {
                if let Some((_, reply)) = self.waiting.take() {
                    reply.reply(self.seen.clone());
                }
            }
        }
        Ok(())
    }
}

#[test]
fn send_interval_ticks_an_actor_whose_messages_are_not_clone() {
    let rt = runtime(1);
    let ticker = rt.spawn(Ticker::default()).unwrap();
    let seen = rt.call(&ticker, |reply| Ticking::After(3, reply), T).unwrap();
    // Every tick came from the factory, called once per firing, in order.
    assert!(seen.len() >= 3);
    assert_eq!(seen, (1..=seen.len() as u32).collect::<Vec<_>>());
    rt.shutdown();
}

// ---- ask with a closure ----

struct Echo;

impl Actor for Echo {
    type Msg = EchoMsg;
    fn handle(&mut self, _: &mut Context<'_, Self>, msg: EchoMsg) -> Result<(), ActorError> {
        match msg {
            EchoMsg::Square(n, reply) => {
                reply.reply(n * n);
            }
            // The ReplyTo is dropped unanswered.
            EchoMsg::Ignore(reply) => drop(reply),
        }
        Ok(())
    }
}

enum EchoMsg {
    Square(u64, ReplyTo<u64>),
    Ignore(ReplyTo<u64>),
}

/// Each answer with the request id its closure captured.
type Answers = Vec<(u64, Result<u64, AskError>)>;

enum ClientMsg {
    /// Ask for the squares of 1..=n, request ids 100.., and tell `done`.
    Go(u64, ReplyTo<Answers>),
    /// One answer, tagged with the id its closure captured.
    Answer(u64, Result<u64, AskError>),
}

struct Client {
    echo: ActorRef<EchoMsg>,
    expected: usize,
    answers: Answers,
    done: Option<ReplyTo<Answers>>,
}

impl Actor for Client {
    type Msg = ClientMsg;
    fn handle(&mut self, ctx: &mut Context<'_, Self>, msg: ClientMsg) -> Result<(), ActorError> {
        match msg {
            ClientMsg::Go(n, done) => {
                self.done = Some(done);
                self.expected = n as usize + 1;
                for i in 1..=n {
                    let id = 100 + i;
                    ctx.ask(
                        &self.echo,
                        |reply| EchoMsg::Square(i, reply),
                        T,
                        move |answer| ClientMsg::Answer(id, answer),
                    )?;
                }
                // An error outcome carries its id as well.
                let id = 999;
                ctx.ask(&self.echo, EchoMsg::Ignore, T, move |answer| {
                    ClientMsg::Answer(id, answer)
                })?;
            }
            ClientMsg::Answer(id, answer) => self.answers.push((id, answer)),
        }
        if self.answers.len() == self.expected {
            if let Some(done) = self.done.take() {
                self.answers.sort_by_key(|(id, _)| *id);
                done.reply(std::mem::take(&mut self.answers));
            }
        }
        Ok(())
    }
}

#[test]
fn an_ask_closure_gets_back_the_request_id_it_captured() {
    let rt = runtime(2);
    let echo = rt.spawn(Echo).unwrap();
    let client = Client { echo, expected: usize::MAX, answers: Vec::new(), done: None };
    let client = rt.spawn(client).unwrap();
    let answers = rt.call(&client, |done| ClientMsg::Go(3, done), T).unwrap();
    assert_eq!(
        answers,
        vec![(101, Ok(1)), (102, Ok(4)), (103, Ok(9)), (999, Err(AskError::Dropped))]
    );
    rt.shutdown();
}

// ---- ActorError and the error types ----

fn may_fail(fail: bool) -> Result<u32, ActorError> {
    if fail { Err(ActorError::msg("disk on fire")) } else { Ok(7) }
}

fn boxed(fail: bool) -> Result<u32, Box<dyn Error>> {
    Ok(may_fail(fail)?)
}

fn boxed_send_sync(fail: bool) -> Result<u32, Box<dyn Error + Send + Sync>> {
    Ok(may_fail(fail)?)
}

/// What `anyhow::Result` asks of an error: `Error + Send + Sync + 'static`.
fn generic<E: Error + Send + Sync + 'static>(error: E) -> Box<dyn Error + Send + Sync> {
    Box::new(error)
}

#[test]
fn actor_error_goes_through_question_mark_into_box_dyn_error() {
    assert_eq!(boxed(false).unwrap(), 7);
    assert_eq!(boxed(true).unwrap_err().to_string(), "disk on fire");
    assert_eq!(boxed_send_sync(true).unwrap_err().to_string(), "disk on fire");

    let error = may_fail(true).map_err(ActorError::into_error).unwrap_err();
    assert_eq!(error.reason(), &ExitReason::error("disk on fire"));
    assert_eq!(generic(error).to_string(), "disk on fire");

    let normal = ExitError::from(ActorError::exit(ExitReason::Normal));
    assert_eq!(normal.to_string(), "the actor exited with reason normal");
    assert_eq!(
        ActorError::exit(ExitReason::Shutdown).to_string(),
        normal.to_string().replace("normal", "shutdown")
    );
}

#[test]
fn an_exit_error_back_through_question_mark_keeps_its_message() {
    let error: ActorError = may_fail(true).map_err(ActorError::into_error).unwrap_err().into();
    assert_eq!(error.reason(), &ExitReason::error("disk on fire"));
}

fn is_error<E: Error + Send + Sync + 'static>() {}

/// Every public error type of the crate is a `std::error::Error` that can
/// cross threads (checked at compile time).
#[test]
fn every_public_error_type_implements_error() {
    is_error::<AskError>();
    is_error::<RuntimeError>();
    is_error::<zbmd_rt::StartError>();
    is_error::<zbmd_rt::SendError<u8>>();
    is_error::<ExitError>();
    is_error::<SupervisorError>();
    is_error::<zbmd_rt::StateMachineError>();
    is_error::<zbmd_rt::behaviour::BreakerError>();
    is_error::<zbmd_rt::behaviour::CallError<std::io::Error>>();
    is_error::<zbmd_rt::timer::TimerError>();
    is_error::<zbmd_rt::timer::InsertError<u8>>();
    is_error::<zbmd_rt::topology::TopologyError>();
    is_error::<zbmd_rt::io::IoError>();
    is_error::<zbmd_rt::sync::CapacityError>();
    is_error::<zbmd_rt::sync::BlockError>();
    is_error::<zbmd_rt::fault::FaultPlanError>();
}

// ---- RuntimeHandle ----

enum Job {
    Add(u64, u64, ReplyTo<u64>),
    /// Asks the runtime to shut down, from inside a handler.
    StopTheWorld(RuntimeHandle),
}

struct Adder;

impl Actor for Adder {
    type Msg = Job;
    fn handle(&mut self, _: &mut Context<'_, Self>, job: Job) -> Result<(), ActorError> {
        match job {
            Job::Add(a, b, reply) => {
                reply.reply(a + b);
            }
            Job::StopTheWorld(handle) => handle.shutdown(),
        }
        Ok(())
    }
}

#[test]
fn a_handle_cloned_into_another_thread_spawns_and_gets_a_reply() {
    let rt = runtime(2);
    let handle = rt.handle();
    let worker = {
        let handle = handle.clone();
        std::thread::spawn(move || {
            let adder = handle.spawn(Adder).expect("spawn through a handle");
            handle.register("adder", &adder.pid()).expect("register");
            let sum = handle.call(&adder, |reply| Job::Add(2, 3, reply), T);
            (sum, handle.whereis("adder").map(|pid| pid.id()), adder.id())
        })
    };
    let (sum, found, spawned) = worker.join().unwrap();
    assert_eq!(sum, Ok(5));
    assert_eq!(found, Some(spawned));
    // The owner sees what the handle did.
    assert_eq!(rt.whereis("adder").map(|pid| pid.id()), Some(spawned));
    assert!(!handle.is_shutting_down());
    rt.shutdown();
    assert!(handle.is_shutting_down());
}

#[test]
fn a_handle_used_after_shutdown_answers_named_errors() {
    let rt = runtime(1);
    let handle = rt.handle();
    let adder = handle.spawn(Adder).unwrap();
    handle.register("adder", &adder.pid()).unwrap();
    rt.shutdown();

    assert!(matches!(handle.spawn(Adder), Err(RuntimeError::ShuttingDown)));
    let options = SpawnOptions { shard: Some(0), ..SpawnOptions::default() };
    assert!(matches!(handle.spawn_with(Adder, options), Err(RuntimeError::ShuttingDown)));
    assert_eq!(handle.call(&adder, |reply| Job::Add(1, 1, reply), T), Err(AskError::NoProc));
    assert!(handle.whereis("adder").is_none());
    assert!(handle.register("again", &adder.pid()).is_err());
    assert!(!handle.unregister(&adder.pid()));
    handle.exit(&adder.pid(), ExitReason::Kill); // a no-op, not a panic
    assert_eq!(handle.live_actors(), 0);
    assert!(matches!(
        Supervisor::start(&handle, SupervisorSpec::one_for_one()),
        Err(SupervisorError::StartFailed { .. })
    ));
    handle.shutdown(); // asking again is harmless
}

#[test]
fn a_shutdown_asked_from_an_actor_wakes_the_owner_in_join() {
    let rt = runtime(2);
    let handle = rt.handle();
    let adder = handle.spawn(Adder).unwrap();
    adder.try_send(Job::StopTheWorld(handle.clone())).unwrap();
    // Returns only once the actor asked, and with every actor stopped.
    rt.join();
    assert!(handle.is_shutting_down());
    assert_eq!(handle.live_actors(), 0);
    assert!(!adder.is_alive());
}

// ---- Placement of supervised children ----

enum Placed {
    Where(ReplyTo<usize>),
    Crash,
}

/// Reports each incarnation's id (its home shard is `id.shard`) from its
/// `started` hook, and the shard it handles messages on.
struct PlacedWorker {
    started: mpsc::Sender<(usize, ActorId)>,
    index: usize,
}

impl Actor for PlacedWorker {
    type Msg = Placed;
    fn started(&mut self, ctx: &mut Context<'_, Self>) -> Result<(), ActorError> {
        let _ = self.started.send((self.index, ctx.id()));
        Ok(())
    }
    fn handle(&mut self, ctx: &mut Context<'_, Self>, msg: Placed) -> Result<(), ActorError> {
        match msg {
            Placed::Where(reply) => {
                reply.reply(ctx.shard());
                Ok(())
            }
            Placed::Crash => Err(ActorError::msg("told to crash")),
        }
    }
}

fn pinned_on(shard: Option<usize>) -> SpawnOptions {
    SpawnOptions { shard, pinned: true, ..SpawnOptions::default() }
}

/// Receives one `started` report per child, as (index, id), sorted by index.
fn reports(rx: &mpsc::Receiver<(usize, ActorId)>, count: usize) -> Vec<(usize, ActorId)> {
    let mut all: Vec<_> = (0..count).map(|_| rx.recv_timeout(T).expect("started")).collect();
    all.sort_by_key(|(index, _)| *index);
    all
}

#[test]
fn children_placed_on_shards_zero_to_three_start_and_restart_there() {
    let rt = runtime(4);
    let (tx, rx) = mpsc::channel();
    let mut spec = SupervisorSpec::one_for_one()
        .intensity(10, Duration::from_secs(60))
        .spawn_options(SpawnOptions { shard: Some(3), ..SpawnOptions::default() });
    let mut refs = Vec::new();
    for index in 0..4 {
        let started = tx.clone();
        let child = ChildSpec::worker(format!("w{index}"), move || PlacedWorker {
            started: started.clone(),
            index,
        })
        .spawn_options(pinned_on(Some(index)));
        refs.push(child.child_ref());
        spec = spec.child(child);
    }
    let _sup = Supervisor::start(&rt, spec).unwrap();
    let first = reports(&rx, 4);
    for (index, id) in &first {
        assert_eq!(usize::from(id.shard), *index, "child {index} started on its shard");
        assert_eq!(refs[*index].call(Placed::Where, T), Ok(*index));
    }
    for (index, old) in &first {
        refs[*index].try_send(Placed::Crash).unwrap();
        let (again, id) = rx.recv_timeout(T).expect("restarted");
        assert_eq!(again, *index);
        assert_ne!(id, *old, "a new incarnation");
        assert_eq!(usize::from(id.shard), *index, "child {index} restarted on its shard");
        assert_eq!(refs[*index].call(Placed::Where, T), Ok(*index));
    }
    rt.shutdown();
}

#[test]
fn round_robin_placement_spreads_a_pool_and_restarts_keep_it() {
    let rt = runtime(4);
    let (tx, rx) = mpsc::channel();
    let template = ChildSpec::worker("pool", {
        let tx = tx.clone();
        move || PlacedWorker { started: tx.clone(), index: usize::MAX }
    })
    .spawn_options(pinned_on(None));
    let spec = SupervisorSpec::simple_one_for_one(template)
        .intensity(10, Duration::from_secs(60))
        .child_placement(ChildPlacement::RoundRobin)
        .spawn_options(SpawnOptions { shard: Some(1), ..SpawnOptions::default() });
    let pool = Supervisor::start(&rt, spec).unwrap();
    let mut workers = Vec::new();
    for index in 0..4 {
        let started = tx.clone();
        let worker =
            pool.start_child(move || PlacedWorker { started: started.clone(), index }, T).unwrap();
        workers.push(worker);
    }
    // Round robin from the supervisor's shard (1): 1, 2, 3, 0.
    let expected = [1, 2, 3, 0];
    for (index, id) in reports(&rx, 4) {
        assert_eq!(usize::from(id.shard), expected[index], "worker {index}");
        assert_eq!(workers[index].call(Placed::Where, T), Ok(expected[index]));
    }
    workers[2].try_send(Placed::Crash).unwrap();
    let (index, id) = rx.recv_timeout(T).expect("restarted");
    assert_eq!(index, 2);
    assert_eq!(usize::from(id.shard), expected[2], "the restart keeps its shard");
    assert_eq!(workers[2].call(Placed::Where, T), Ok(expected[2]));
    rt.shutdown();
}
