%% Erlang/OTP peers of zbmd's actor benchmarks (benches/benches/actors.rs).
%%
%% run(Group, Case, Ops, Reps) runs one workload Reps times after one
%% warm-up run of Ops div 10, and prints one JSON line:
%%   {"group":..., "case":..., "impl":"erlang", "ns_per_op":MEDIAN, ...}
%% The message is a bare integer, as the Rust side sends a bare u64.
%% Driven by run.sh, which picks the scheduler count (+S) per case.
-module(actors).
-export([run/4]).

run(Group, Case, Ops, Reps) when is_atom(Group) ->
    put(case_name, Case),
    Fun = workload(Group),
    _ = Fun(max(Ops div 10, 1)),
    Samples = [Fun(Ops) / Ops || _ <- lists:seq(1, Reps)],
    Sorted = lists:sort(Samples),
    Median = lists:nth((length(Sorted) + 1) div 2, Sorted),
    io:format("{\"group\":\"~s\",\"case\":\"~s\",\"impl\":\"erlang\",\"ns_per_op\":~.3f,"
              "\"ops_per_rep\":~B,\"reps_ns_per_op\":[~s],\"schedulers\":~B,\"otp\":\"~s\"}~n",
              [Group, Case, Median, Ops, join([io_lib:format("~.3f", [S]) || S <- Samples]),
               erlang:system_info(schedulers_online), erlang:system_info(otp_release)]).

join([]) -> "";
join([H | T]) -> lists:flatten([H | [[",", S] || S <- T]]).

%% Each workload takes the number of operations and returns elapsed nanoseconds.
%% ping_pong binds its two processes to schedulers with spawn_opt's
%% {scheduler, N} (undocumented in OTP 25, but honoured: a process spawned
%% so reports that scheduler_id): same_shard puts both on scheduler 1,
%% two_shards ping on 1 and pong on 2 (run.sh starts 2 schedulers bound to
%% the 2 cores, +sbt db).
workload(ping_pong) ->
    {PingOn, PongOn} = case get(case_name) of
                           "two_shards" -> {1, 2};
                           _ -> {1, 1}
                       end,
    fun(N) -> ping_pong(N, PingOn, PongOn) end;
workload(ring_1000) -> fun(Hops) -> ring(1000, Hops) end.

ping_pong(N, PingOn, PongOn) ->
    Me = self(),
    Ping = spawn_opt(fun() -> ping_start(Me, N) end, [{scheduler, PingOn}]),
    Pong = spawn_opt(fun() -> pong(Ping) end, [{scheduler, PongOn}]),
    Ping ! {pong, Pong},
    receive {ping_done, Elapsed} -> Pong ! stop, Elapsed end.

ping_start(Main, N) ->
    receive {pong, Pong} -> ok end,
    T0 = erlang:monotonic_time(nanosecond),
    ping(Pong, N),
    T1 = erlang:monotonic_time(nanosecond),
    Main ! {ping_done, T1 - T0}.

ping(_Pong, 0) -> ok;
ping(Pong, N) ->
    Pong ! N,
    receive
        M when is_integer(M) -> ping(Pong, M - 1)
    end.

pong(Peer) ->
    receive
        N when is_integer(N) -> Peer ! N, pong(Peer);
        stop -> ok
    end.

%% Ring: Size processes, each forwarding the token (the hops left) to the
%% next; the one that receives 0 tells the measuring process.
ring(Size, Hops) ->
    Me = self(),
    Pids = [spawn(fun() -> receive {next, Next} -> node(Me, Next) end end)
            || _ <- lists:seq(1, Size)],
    [First | Rest] = Pids,
    lists:foreach(fun({P, Next}) -> P ! {next, Next} end,
                  lists:zip(Pids, Rest ++ [First])),
    T0 = erlang:monotonic_time(nanosecond),
    First ! Hops,
    receive ring_done -> ok end,
    T1 = erlang:monotonic_time(nanosecond),
    lists:foreach(fun(P) -> P ! stop end, Pids),
    T1 - T0.

node(Main, Next) ->
    receive
        0 -> Main ! ring_done, node(Main, Next);
        K when is_integer(K) -> Next ! K - 1, node(Main, Next);
        stop -> ok
    end.
