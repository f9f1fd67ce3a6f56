"""UDP listeners' receive buffers and the kernel's drops at them, on loopback sockets."""
import socket

from prometheus_client import CollectorRegistry, generate_latest

from appliance.plumbing.drops import count_drops
from appliance.plumbing.udp import grow_receive_buffer, receive_drops, udp_socket


def _rmem_max() -> int:
    with open("/proc/sys/net/core/rmem_max") as f:
        return int(f.read())


def test_a_listener_gets_the_buffer_asked_for_or_as_much_as_the_kernel_allows():
    sock = udp_socket("127.0.0.1", 0)
    try:
        default = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        got = grow_receive_buffer(sock, 1 << 20)
        assert got > default
        assert got >= 2 * min(1 << 20, _rmem_max())  # SO_RCVBUFFORCE passes rmem_max where allowed
    finally:
        sock.close()


def test_the_drops_at_a_full_buffer_are_counted_and_scraped():
    full = udp_socket("127.0.0.1", 0)
    other = udp_socket("127.0.0.1", 0)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        full.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # room for a few datagrams only
        registry = CollectorRegistry()
        count_drops(registry, "media", lambda: [full])
        count_drops(registry, "turn", lambda: [other])
        assert receive_drops([full, other]) == 0
        for _ in range(200):
            sender.sendto(b"x" * 1000, full.getsockname())
        queued = 0
        while True:
            try:
                full.recv(2048)
            except BlockingIOError:
                break
            queued += 1
        assert receive_drops([full, other]) == 200 - queued > 0
        assert receive_drops([other]) == 0
        assert registry.get_sample_value("edgecall_udp_receive_drops_total", {"sockets": "media"}) == 200 - queued
        assert registry.get_sample_value("edgecall_udp_receive_drops_total", {"sockets": "turn"}) == 0
        # One family for both services: a scrape may name a metric family only once.
        assert generate_latest(registry).decode().count("# TYPE edgecall_udp_receive_drops_total") == 1
    finally:
        for sock in (full, other, sender):
            sock.close()
