#!/usr/bin/env python3
"""A jdc tx-selector in Python: a drop-in replacement for jdc-tx-selector.

It relies on nothing but the bus contract of docs/bus-protocol.md: it reads `template`
messages from jdc-template-watcher's stream, chooses transactions, and publishes `selection`
messages (and heartbeats) on its own ZeroMQ PUB socket, where jdc-declarator connects.

Policy `python-example`: keep bitcoind's order; leave out every transaction whose own fee rate
is below --min-fee-rate, and every transaction that depends on one left out; stop adding
transactions once the template's weight or sigops limit, minus a reserve for the coinbase,
would be exceeded.

Needs pyzmq and msgpack (requirements.txt). Run with --help for the options.
"""

import argparse
import hashlib
import logging
import signal
import sys
import time

import msgpack
import zmq

BUS_VERSION = 1  # the envelope `version` this program speaks
SOURCE = "python-selector"  # envelope `source`: consumers only log it
POLICY = "python-example"  # selection `policy`
SOFTWARE_VERSION = "python-example-0.1"  # heartbeat `version`
# Drop reasons, in the order they are reported.
REASONS = ("below-min-fee-rate", "block-full", "parent-dropped")

log = logging.getLogger("python-selector")


def now_us():
    return time.time_ns() // 1000


class Malformed(Exception):
    """A message we cannot use: logged, counted and skipped."""


# --- Bitcoin: the witness commitment (BIP141) ---------------------------------------------


def dsha256(data):
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def merkle_root(leaves):
    """Merkle root of 32-byte leaves (internal byte order); an odd level repeats its last."""
    level = list(leaves)
    while len(level) > 1:
        if len(level) % 2:
            level.append(level[-1])
        level = [dsha256(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


def witness_commitment(wtxids_rpc_hex):
    """Commitment over the chosen transactions' wtxids, with an all-zero witness reserved value.

    The wtxids come in RPC hex (byte-reversed), so each is reversed into a leaf; the
    coinbase's leaf is 32 zero bytes. The result is the 32 bytes as they appear in the
    coinbase output (`6a24aa21a9ed` + these), which is what `witness_commitment` carries.
    """
    leaves = [bytes(32)] + [bytes.fromhex(w)[::-1] for w in wtxids_rpc_hex]
    return dsha256(merkle_root(leaves) + bytes(32))


# --- Reading a template ---------------------------------------------------------------------


def field(message, key, kind):
    """message[key], checked to be a `kind` (int: a non-negative integer)."""
    if key not in message:
        raise Malformed(f"missing field `{key}`")
    value = message[key]
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if ok and kind is int:
        ok = value >= 0
    if not ok:
        raise Malformed(f"field `{key}` is not a {kind.__name__}: {value!r:.80}")
    return value


def check_template(t):
    """Raises Malformed unless `t` has every field the policy reads, of the right type."""
    for key in ("id", "height", "version", "bits", "curtime", "mintime", "subsidy"):
        field(t, key, int)
    for key in ("weight_limit", "sigop_limit", "tip_detected_at_us"):
        field(t, key, int)
    field(t, "prev_hash", str)
    for position, tx in enumerate(field(t, "txs", list), start=1):
        if not isinstance(tx, dict):
            raise Malformed(f"transaction {position} is not a map")
        try:
            field(tx, "txid", str)
            for key in ("fee", "weight", "sigops"):
                field(tx, key, int)
            if len(bytes.fromhex(field(tx, "wtxid", str))) != 32:
                raise ValueError
            depends = tx.get("depends", [])  # optional, as in the protocol
            if not isinstance(depends, list) or not all(
                isinstance(d, int) and 1 <= d < position for d in depends
            ):
                raise Malformed(f"`depends` {depends!r:.80} names no earlier transaction")
        except ValueError:
            raise Malformed(f"transaction {position}: wtxid is not 64 hex digits") from None
        except Malformed as e:
            raise Malformed(f"transaction {position}: {e}") from None


# --- The policy -----------------------------------------------------------------------------


def select(t, min_fee_rate, reserve_weight, reserve_sigops, corrupt_commitment=False):
    """The selection body for template `t` (already checked), without its `id`."""
    max_weight = max(0, t["weight_limit"] - reserve_weight)
    max_sigops = max(0, t["sigop_limit"] - reserve_sigops)
    chosen, left_out = [], set()  # left_out: 1-based positions, as `depends` counts
    dropped = {reason: [0, 0] for reason in REASONS}  # reason -> [count, fees]
    weight = sigops = fees = 0
    for position, tx in enumerate(t["txs"], start=1):
        vsize = (tx["weight"] + 3) // 4  # ceil(weight / 4)
        if any(d in left_out for d in tx.get("depends", [])):
            reason = "parent-dropped"
        elif tx["fee"] < min_fee_rate * vsize:
            reason = "below-min-fee-rate"
        elif weight + tx["weight"] > max_weight or sigops + tx["sigops"] > max_sigops:
            reason = "block-full"  # a smaller transaction further on may still fit
        else:
            chosen.append(tx)
            weight += tx["weight"]
            sigops += tx["sigops"]
            fees += tx["fee"]
            continue
        left_out.add(position)
        dropped[reason][0] += 1
        dropped[reason][1] += tx["fee"]

    commitment = witness_commitment([tx["wtxid"] for tx in chosen])
    if corrupt_commitment:  # a test aid: the declarator must refuse this selection
        commitment = bytes([commitment[0] ^ 0xFF]) + commitment[1:]
    return {
        "template_id": t["id"],
        "height": t["height"],
        "prev_hash": t["prev_hash"],
        "version": t["version"],
        "bits": t["bits"],
        "curtime": t["curtime"],
        "mintime": t["mintime"],
        "policy": POLICY,
        "txids": [tx["txid"] for tx in chosen],  # parents come first: bitcoind's order
        "fees": fees,
        "coinbase_value": t["subsidy"] + fees,
        "weight": weight,
        "sigops": sigops,
        "witness_commitment": commitment.hex(),
        "dropped": [
            {"reason": r, "count": c, "fee": f} for r, (c, f) in dropped.items() if c > 0
        ],
        "tip_detected_at_us": t["tip_detected_at_us"],
    }


# --- The bus --------------------------------------------------------------------------------


class Stats:
    received = malformed = gaps = 0


class Publisher:
    """Our PUB socket: envelopes, a `seq` per topic, the latest selection re-sent every
    interval under `resend:selection`, and heartbeats announcing its `seq`."""

    def __init__(self, ctx, endpoint):
        self.sock = ctx.socket(zmq.PUB)
        self.sock.bind(endpoint)
        self.instance = now_us()  # changes when we restart: consumers start afresh
        self.seqs = {}  # topic -> seq of its latest message
        self.latest = {}  # state topic -> (seq, envelope), re-sent as is
        self.state = "waiting-for-template"

    def publish(self, topic, body):
        seq = self.seqs.get(topic, 0) + 1
        self.seqs[topic] = seq
        envelope = msgpack.packb(
            {
                "version": BUS_VERSION,
                "source": SOURCE,
                "instance": self.instance,
                "seq": seq,
                "sent_at_us": now_us(),
                "body": body,  # last, as jdc writes it: consumers can skip re-sends cheaply
            }
        )
        if topic == "selection":
            self.latest[topic] = (seq, envelope)
        self.sock.send_multipart([topic.encode(), envelope])

    def tick(self, stats):
        """Every interval: a heartbeat, then the latest state, byte for byte."""
        self.publish(
            "heartbeat",
            {
                "started_at_us": self.instance,
                "version": SOFTWARE_VERSION,
                "state": self.state,
                "bus_received": stats.received,
                "bus_malformed": stats.malformed,
                "bus_gaps": stats.gaps,
                "state_seqs": {topic: seq for topic, (seq, _) in self.latest.items()},
            },
        )
        for topic, (_, envelope) in self.latest.items():
            self.sock.send_multipart([b"resend:" + topic.encode(), envelope])


class WatcherStream:
    """SUB to the watcher's stream: `template` and `heartbeat` always, `resend:template` only
    while we lack the current template (nothing held yet, or a heartbeat announces a newer
    `seq`), so the publisher does not send us megabytes every second."""

    def __init__(self, ctx, endpoint, silence_timeout_s, stats):
        self.ctx, self.endpoint, self.silence = ctx, endpoint, silence_timeout_s
        self.stats = stats
        self.sock = None
        self.instance = None  # the watcher's `instance`: a new one means it restarted
        self.connect()

    def connect(self):
        if self.sock is not None:
            self.sock.close(linger=0)
        self.sock = self.ctx.socket(zmq.SUB)
        for topic in (b"template", b"heartbeat"):
            self.sock.setsockopt(zmq.SUBSCRIBE, topic)
        self.sock.connect(self.endpoint)
        self.resend_subscribed = False
        self.forget()  # anything may have been missed while disconnected
        self.last_heard = time.monotonic()

    def forget(self):
        self.held = None  # `seq` of the template we hold
        self.announced = None  # `seq` of the latest template, per the watcher's heartbeat
        self.last_seq = {}  # topic -> last live seq, to count gaps
        self.sync_resend()

    def sync_resend(self):
        want = self.held is None or (self.announced is not None and self.held < self.announced)
        if want != self.resend_subscribed:
            self.sock.setsockopt(zmq.SUBSCRIBE if want else zmq.UNSUBSCRIBE, b"resend:template")
            self.resend_subscribed = want

    def check_silence(self):
        """Nothing at all (not even a heartbeat) for too long: rebuild the socket."""
        if time.monotonic() - self.last_heard > self.silence:
            log.warning("watcher stream %s silent; reconnecting", self.endpoint)
            self.connect()

    def receive(self):
        """One message: the template body to select from, or None (heartbeat, skipped)."""
        frames = self.sock.recv_multipart()
        self.stats.received += 1
        self.last_heard = time.monotonic()
        try:
            return self.parse(frames)
        except Malformed as e:
            self.stats.malformed += 1
            log.warning("skipping malformed bus message: %s", e)
            return None

    def parse(self, frames):
        if len(frames) != 2:
            raise Malformed(f"expected 2 frames, got {len(frames)}")
        topic = frames[0].decode("ascii", "replace")
        resent = topic.startswith("resend:")
        name = topic[len("resend:"):] if resent else topic
        if name not in ("template", "heartbeat"):
            raise Malformed(f"unknown topic {topic!r}")
        try:
            envelope = msgpack.unpackb(frames[1])
        except Exception as e:  # not MessagePack, trailing bytes, non-string keys...
            why = f"{type(e).__name__}: {e}"
            raise Malformed(f"{topic}: not a MessagePack envelope ({why})") from None
        if not isinstance(envelope, dict):
            raise Malformed(f"{topic}: the envelope is not a map")
        try:
            version = field(envelope, "version", int)
            if version != BUS_VERSION:
                raise Malformed(f"bus protocol version {version} (we speak {BUS_VERSION})")
            field(envelope, "source", str)
            field(envelope, "sent_at_us", int)
            instance = field(envelope, "instance", int)
            seq = field(envelope, "seq", int)
            body = field(envelope, "body", dict)
        except Malformed as e:
            raise Malformed(f"{topic} envelope: {e}") from None

        if instance != self.instance:
            if self.instance is not None:
                log.info("the watcher restarted (instance %d); taking its state afresh", instance)
            self.instance = instance
            self.forget()
        if name == "template":
            self.held = max(self.held or 0, seq)
        if not resent:  # re-sends repeat an old seq: they say nothing about gaps
            last = self.last_seq.get(name)
            if last is not None and seq > last + 1:
                self.stats.gaps += seq - last - 1
                log.warning("bus sequence gap: %d %s message(s) missed", seq - last - 1, name)
            self.last_seq[name] = seq
        if name == "heartbeat":
            seqs = body.get("state_seqs", {})
            if isinstance(seqs, dict) and isinstance(seqs.get("template"), int):
                self.announced = seqs["template"]
        self.sync_resend()
        return body if name == "template" else None


# --- Main loop ------------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="A jdc tx-selector in Python (policy python-example). Run it instead of "
        "jdc-tx-selector; see README.md next to this file."
    )
    p.add_argument("--watcher", default="tcp://127.0.0.1:28400",
                   help="the template-watcher's stream to connect to (bus.watcher)")
    p.add_argument("--bind", default="tcp://127.0.0.1:28401",
                   help="where to bind our PUB socket: the port of bus.selector, where "
                   "jdc-declarator and jdc-metrics connect")
    p.add_argument("--min-fee-rate", type=float, default=1.0,
                   help="sat/vB; a transaction paying less on its own is left out, with "
                   "everything that depends on it (default 1.0)")
    p.add_argument("--coinbase-reserve-weight", type=int, default=8000,
                   help="weight units kept free for the coinbase (default 8000)")
    p.add_argument("--coinbase-reserve-sigops", type=int, default=400,
                   help="sigops kept free for the coinbase (default 400)")
    p.add_argument("--interval-ms", type=int, default=1000,
                   help="heartbeat and re-send interval (bus.resend_interval_ms, default 1000)")
    p.add_argument("--silence-timeout-ms", type=int, default=2500,
                   help="reconnect to the watcher after this long without any message "
                   "(bus.silence_timeout_ms, default 2500)")
    p.add_argument("--corrupt-commitment", action="store_true",
                   help="TEST AID: publish a wrong witness commitment, which the declarator "
                   "must refuse")
    p.add_argument("--corrupt-after", type=int, default=None, metavar="N",
                   help="TEST AID: publish N good selections, then only wrong witness "
                   "commitments (the declarator must keep the last valid one)")
    args = p.parse_args(argv)
    if not args.min_fee_rate >= 0 or args.min_fee_rate == float("inf"):
        p.error("--min-fee-rate must be a finite number, 0 or more")
    if min(args.coinbase_reserve_weight, args.coinbase_reserve_sigops) < 0:
        p.error("the coinbase reserves must be 0 or more")
    if args.corrupt_after is not None and args.corrupt_after < 0:
        p.error("--corrupt-after must be 0 or more")
    if args.interval_ms <= 0 or args.silence_timeout_ms <= 0:
        p.error("--interval-ms and --silence-timeout-ms must be positive")
    return args


def run(args, ctx):
    stats = Stats()
    pub = Publisher(ctx, args.bind)
    watcher = WatcherStream(ctx, args.watcher, args.silence_timeout_ms / 1000, stats)
    log.info("python selector started: policy %s, min fee rate %s sat/vB, publishing on %s, "
             "templates from %s", POLICY, args.min_fee_rate, args.bind, args.watcher)
    if args.corrupt_commitment:
        log.warning("--corrupt-commitment: every selection carries a WRONG witness commitment")
    if args.corrupt_after is not None:
        log.warning("--corrupt-after %d: the selections after the first %d carry a WRONG "
                    "witness commitment", args.corrupt_after, args.corrupt_after)
    published = 0  # selections published (re-sends aside)
    interval = args.interval_ms / 1000
    next_tick = time.monotonic()
    last_template_id = None
    last_selection_id = 0
    while True:
        timeout_ms = max(0, int((next_tick - time.monotonic()) * 1000))
        if watcher.sock.poll(timeout_ms, zmq.POLLIN):
            template = watcher.receive()
            if template is not None and template.get("id") != last_template_id:
                try:
                    check_template(template)
                except Malformed as e:
                    stats.malformed += 1
                    log.warning("skipping template: %s", e)
                    pub.publish("event", {"level": "warn", "kind": "template-refused",
                                          "message": str(e)})
                    continue
                last_template_id = template["id"]  # re-sends of it are skipped from now on
                started = time.monotonic()
                corrupt = args.corrupt_commitment or (
                    args.corrupt_after is not None and published >= args.corrupt_after)
                body = select(template, args.min_fee_rate, args.coinbase_reserve_weight,
                              args.coinbase_reserve_sigops, corrupt)
                published += 1
                # Unique id: the microsecond clock, strictly increasing. `id` goes first, as
                # jdc writes it, so consumers can read it without decoding the rest.
                last_selection_id = max(now_us(), last_selection_id + 1)
                pub.publish("selection", {"id": last_selection_id, **body})
                pub.state = "ok"
                log.info(
                    "selection published%s: id %d, template %d, height %d, %d txs, fees %d, "
                    "weight %d, sigops %d, dropped %s, took %.1f ms",
                    " (CORRUPT)" if corrupt else "", last_selection_id, body["template_id"], body["height"], len(body["txids"]),
                    body["fees"], body["weight"], body["sigops"],
                    ", ".join(f"{d['reason']}={d['count']} ({d['fee']} sat)"
                              for d in body["dropped"]) or "none",
                    (time.monotonic() - started) * 1000,
                )
        now = time.monotonic()
        if now >= next_tick:
            pub.tick(stats)
            next_tick = max(next_tick + interval, now)
        watcher.check_silence()


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # SIGTERM (and Ctrl-C) end the loop; the sockets are closed without waiting.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ctx = zmq.Context()
    try:
        run(args, ctx)
    except KeyboardInterrupt:
        pass
    except zmq.ZMQError as e:
        log.error("bus error: %s", e)
        return 1
    finally:
        log.info("python selector stopping")
        ctx.destroy(linger=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
