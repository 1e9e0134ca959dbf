%% Erlang/OTP peer of zbmd's restart latency benchmark
%% (benches/benches/supervision.rs): the same restart cycle under OTP's own
%% `supervisor`, with the same tree and the same flags.
%%
%% One cycle: the driver sends `crash` to child 0, which calls exit(crash);
%% the supervisor restarts per its strategy; the new incarnation of child 0
%% sends {up, Tree, 0, Pid} to the driver as the first thing it does; the
%% driver sends it `ping`; it answers `pong`. That ends the cycle.
%%
%% The tree: one supervisor, 10 permanent workers (shutdown 5000, OTP's
%% default for workers), intensity 100, period 1 s. Children are plain
%% processes (no proc_lib, no gen_server): the start function, run by the
%% supervisor, spawn_links them, so they start on the supervisor's scheduler.
%% After every 100 cycles the driver stops the tree (exit(Sup, shutdown),
%% waiting for its 'EXIT') and starts a fresh one, outside the timed spans:
%% OTP filters its list of restart times on every restart, and a fresh tree
%% keeps that list as short as zbmd's. The driver is bound to scheduler 1
%% (spawn_opt {scheduler, 1}, as actors.erl's ping_pong); the supervisor it
%% starts, and the children, begin on the same scheduler.
%%
%% Logging is off (logger level none), as zbmd's bench installs no tracing
%% subscriber: otherwise OTP formats and prints a supervisor report for
%% every restart, and zbmd's "actor crashed" event goes nowhere.
%%
%% run(Strategy, Case, Cycles, Reps) runs Cycles cycles Reps times after one
%% warm-up run of Cycles div 10, and prints one JSON line in actors.erl's
%% format:
%%   {"group":"restart", "case":Case, "impl":"erlang", "ns_per_op":MEDIAN, ...}
%% Driven by run_supervision.sh (+S 2:2 +sbt db).
-module(supervision).
-behaviour(supervisor).
-export([run/4, init/1, start_child/3]).

-define(CHILDREN, 10).
-define(CYCLES_PER_TREE, 100).
-define(INTENSITY, 100).
-define(PERIOD_S, 1).
-define(WORKER_SHUTDOWN_MS, 5000).
-define(STALL_MS, 60000).

run(Strategy, Case, Cycles, Reps) when is_atom(Strategy) ->
    ok = logger:set_primary_config(level, none),
    Run = fun(N) -> cycles(Strategy, N) end,
    _ = Run(max(Cycles div 10, 1)),
    Samples = [Run(Cycles) / Cycles || _ <- lists:seq(1, Reps)],
    Sorted = lists:sort(Samples),
    Median = lists:nth((length(Sorted) + 1) div 2, Sorted),
    io:format("{\"group\":\"restart\",\"case\":\"~s\",\"impl\":\"erlang\",\"ns_per_op\":~.3f,"
              "\"ops_per_rep\":~B,\"reps_ns_per_op\":[~s],\"schedulers\":~B,\"otp\":\"~s\"}~n",
              [Case, Median, Cycles, join([io_lib:format("~.3f", [S]) || S <- Samples]),
               erlang:system_info(schedulers_online), erlang:system_info(otp_release)]).

join([]) -> "";
join([H | T]) -> lists:flatten([H | [[",", S] || S <- T]]).

%% Runs N cycles in a fresh driver process and returns the nanoseconds
%% spent in them (tree setup and teardown excluded).
cycles(Strategy, N) ->
    Me = self(),
    Driver = spawn_opt(fun() -> driver(Me, Strategy, N) end, [link, {scheduler, 1}]),
    receive
        {Driver, Elapsed} -> Elapsed
    after ?STALL_MS ->
        error({stalled, Strategy, N})
    end.

driver(Main, Strategy, N) ->
    process_flag(trap_exit, true),
    Main ! {self(), trees(Strategy, N, 0)}.

%% Runs the cycles on trees of at most ?CYCLES_PER_TREE cycles each.
trees(_Strategy, 0, Elapsed) ->
    Elapsed;
trees(Strategy, Left, Elapsed) ->
    Tree = make_ref(),
    {ok, Sup} = supervisor:start_link(?MODULE, {Strategy, self(), Tree}),
    Child0 = await_start(Tree, ?CHILDREN, undefined),
    Batch = min(Left, ?CYCLES_PER_TREE),
    T0 = erlang:monotonic_time(nanosecond),
    batch(Tree, Child0, Batch),
    T1 = erlang:monotonic_time(nanosecond),
    exit(Sup, shutdown),
    receive
        {'EXIT', Sup, _} -> ok
    after ?STALL_MS ->
        error({stalled, teardown})
    end,
    flush_ups(),
    trees(Strategy, Left - Batch, Elapsed + (T1 - T0)).

%% The first start of a tree: every child's up, so none is left in the
%% mailbox when timing starts; answers child 0's pid.
await_start(_Tree, 0, Child0) ->
    Child0;
await_start(Tree, Waiting, Child0) ->
    receive
        {up, Tree, 0, Pid} -> await_start(Tree, Waiting - 1, Pid);
        {up, Tree, _, _} -> await_start(Tree, Waiting - 1, Child0)
    after ?STALL_MS ->
        error({stalled, start})
    end.

batch(_Tree, _Child0, 0) ->
    ok;
batch(Tree, Child0, Left) ->
    Child0 ! crash,
    New = await_up(Tree),
    New ! ping,
    await_pong(),
    batch(Tree, New, Left - 1).

%% Child 0's new incarnation; the other children's ups (one_for_all) are
%% dropped as they come.
await_up(Tree) ->
    receive
        {up, Tree, 0, Pid} -> Pid;
        {up, _, _, _} -> await_up(Tree)
    after ?STALL_MS ->
        error({stalled, restart})
    end.

await_pong() ->
    receive
        pong -> ok;
        {up, _, _, _} -> await_pong()
    after ?STALL_MS ->
        error({stalled, pong})
    end.

flush_ups() ->
    receive
        {up, _, _, _} -> flush_ups()
    after 0 ->
        ok
    end.

%% supervisor callback: the tree.
init({Strategy, Driver, Tree}) ->
    Flags = #{strategy => Strategy, intensity => ?INTENSITY, period => ?PERIOD_S},
    Children = [#{id => I,
                  start => {?MODULE, start_child, [Driver, Tree, I]},
                  restart => permanent,
                  shutdown => ?WORKER_SHUTDOWN_MS,
                  type => worker}
                || I <- lists:seq(0, ?CHILDREN - 1)],
    {ok, {Flags, Children}}.

%% The start function, run by the supervisor: a plain linked process.
start_child(Driver, Tree, I) ->
    {ok, spawn_link(fun() -> child(Driver, Tree, I) end)}.

child(Driver, Tree, I) ->
    Driver ! {up, Tree, I, self()},
    child_loop(Driver).

child_loop(Driver) ->
    receive
        crash -> exit(crash);
        ping -> Driver ! pong, child_loop(Driver)
    end.
