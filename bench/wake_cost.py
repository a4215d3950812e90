"""What one wake-up costs on this machine: the unit the gateways' per-message CPU is made of.

A message that arrives alone (200 msg/s over 100 sockets: one every 5 ms) wakes the
process that reads it, and the write that passes it on wakes the next process. This
probe measures both halves over loopback TCP with nothing else in the way:

- **writer**: CPU of one 4-byte ``send`` that wakes a peer sleeping in ``epoll_wait``,
  against the same ``send`` while the peer is busy (back to back);
- **reader**: CPU of one ``epoll_wait`` wake-up plus its ``recv``.

    .venv/bin/python bench/wake_cost.py [--messages 2000] [--gap-ms 5]

On bare metal each is a few microseconds; on a virtual machine waking another vCPU
(an inter-processor interrupt) and coming back from idle cost far more.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import time


def reader(sock: socket.socket, expected: int, out: int) -> None:
    """Child: sleep in epoll until each message arrives; report CPU per wake-up."""
    poller = select.epoll()
    poller.register(sock.fileno(), select.EPOLLIN)
    got = 0
    began = time.process_time()
    wakes = 0
    while got < expected:
        if poller.poll(-1):
            wakes += 1
            got += len(sock.recv(65536))
    used = time.process_time() - began
    os.write(out, f"{used / wakes * 1e6:.1f}".encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--gap-ms", type=float, default=5.0, help="pause between messages")
    args = parser.parse_args()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    writer = socket.create_connection(listener.getsockname())
    writer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    peer, _ = listener.accept()
    back_to_back = 20_000
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        reader(peer, 4 * (args.messages + back_to_back), write_end)
        os._exit(0)
    spent = 0.0
    for _ in range(args.messages):
        time.sleep(args.gap_ms / 1000)
        began = time.process_time()
        writer.send(b"ping")
        spent += time.process_time() - began
    began = time.process_time()
    for _ in range(back_to_back):
        writer.send(b"ping")
    busy = (time.process_time() - began) / back_to_back
    os.waitpid(pid, 0)
    woken = os.read(read_end, 64).decode()
    print("| what | CPU µs |")
    print("|---|---:|")
    alone = spent / args.messages * 1e6
    print(f"| send that wakes a sleeping peer ({args.gap_ms:g} ms apart) | {alone:.1f} |")
    print(f"| the same send back to back (peer busy) | {busy * 1e6:.1f} |")
    print(f"| reader: one wake-up from epoll_wait plus its recv | {woken} |")


if __name__ == "__main__":
    main()
