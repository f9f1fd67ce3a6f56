/* The media port's compiled send path (issue 17): SRTP-protect a batch of RTP packets and send them
 * with one sendmmsg per chunk.
 *
 * Per packet, Python's floor was pylibsrtp's protect (a Python wrapper and two cffi buffer copies)
 * plus one sendto system call. Here the packets are copied once into a buffer with room for the
 * SRTP trailer, protected in place by libsrtp's own srtp_protect, and sent together.
 *
 * libsrtp is not linked: the SRTP contexts belong to pylibsrtp, so the caller passes the address of
 * srtp_protect as pylibsrtp's copy of libsrtp has it, and each packet's srtp_t (sendbatch.py finds
 * both and checks the function's signature). The GIL stays held: a call is a few microseconds of
 * work, and the static buffers below rely on no two calls running at once.
 *
 * Consecutive packets to one UDP address (a leg's run: a video frame's packets are mostly of one size)
 * go as one message with UDP generic segmentation offload (UDP_SEGMENT, Linux 4.18): the kernel builds,
 * routes and queues one buffer and cuts it into the same datagrams only at the device, or on loopback
 * at the receiving socket. A segment size is the run's first packet's; only the last may be shorter. A
 * message the kernel refuses with segmentation is sent again packet by packet. A fan-out queues packet by
 * packet, leg by leg (each packet to every leg, then the next), so the items are first grouped by target:
 * each target's packets keep their order and the targets the order they first appear in, so that a leg's
 * packets are consecutive. Order matters only per target (one 5-tuple, one SRTP context).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103 /* linux/udp.h */
#endif

/* pylibsrtp's bound: its 1500-byte buffer less SRTP_MAX_TRAILER_LEN, so that both paths refuse the same
 * packets. */
#define MAX_PACKET 1356
#define MAX_TRAILER (16 + 128) /* SRTP_MAX_TAG_LEN + SRTP_MAX_MKI_LEN */
#define SLOT (MAX_PACKET + MAX_TRAILER)
#define CHUNK 64 /* datagrams per sendmmsg */
#define SEND_ATTEMPTS 4 /* sendmmsg calls interrupted by a signal before a chunk's remainder is dropped */
#define GSO_SEGMENTS 64 /* UDP_MAX_SEGMENTS of older kernels */
#define GSO_BYTES 65000 /* what one UDP datagram, so one segmented message, may carry */

/* srtp_err_status_t srtp_protect(srtp_t ctx, void *rtp_hdr, int *len_ptr), libsrtp 2 (an enum is an int). */
typedef int (*protect_fn)(void *ctx, void *rtp_hdr, int *len_ptr);

static unsigned char buffers[CHUNK][SLOT];
static struct mmsghdr messages[CHUNK];
static struct iovec vectors[CHUNK];
static const char *names[CHUNK]; /* each protected packet's sockaddr */
static socklen_t name_lengths[CHUNK];
static int segments[CHUNK]; /* packets each message carries: vectors[first[m]..first[m] + segments[m]) */
static int first[CHUNK];
static union {
    char space[CMSG_SPACE(sizeof(uint16_t))];
    struct cmsghdr align;
} controls[CHUNK];

/* One item, checked: (target, packet) where target is (srtp_t address, sockaddr bytes, ...). */
typedef struct {
    void *srtp;
    const char *packet;
    Py_ssize_t length;
    const char *address;
    Py_ssize_t address_length;
} item_t;

static int
read_item(PyObject *item, item_t *out)
{
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
        PyErr_SetString(PyExc_TypeError, "each item is a (target, packet) tuple");
        return -1;
    }
    PyObject *target = PyTuple_GET_ITEM(item, 0), *packet = PyTuple_GET_ITEM(item, 1);
    if (!PyTuple_Check(target) || PyTuple_GET_SIZE(target) < 2 || !PyLong_Check(PyTuple_GET_ITEM(target, 0))
            || !PyBytes_Check(PyTuple_GET_ITEM(target, 1))) {
        PyErr_SetString(PyExc_TypeError, "a target is a (srtp_t address, sockaddr bytes, ...) tuple");
        return -1;
    }
    if (!PyBytes_Check(packet)) {
        PyErr_SetString(PyExc_TypeError, "a packet is bytes");
        return -1;
    }
    out->srtp = PyLong_AsVoidPtr(PyTuple_GET_ITEM(target, 0));
    if (out->srtp == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "a null srtp_t");
        return -1;
    }
    PyObject *address = PyTuple_GET_ITEM(target, 1);
    out->address = PyBytes_AS_STRING(address);
    out->address_length = PyBytes_GET_SIZE(address);
    if (out->address_length < (Py_ssize_t)sizeof(sa_family_t)
            || out->address_length > (Py_ssize_t)sizeof(struct sockaddr_storage)) {
        PyErr_SetString(PyExc_ValueError, "a sockaddr of an impossible length");
        return -1;
    }
    out->packet = PyBytes_AS_STRING(packet);
    out->length = PyBytes_GET_SIZE(packet);
    return 0;
}

/* The order to send items in: grouped by target object (a session's target is one tuple), each
 * target's items in their order, the targets in the order they first appear. `order` has `total` places;
 * -1 with MemoryError when the scratch space cannot be had. */
static int
group_by_target(PyObject *items, Py_ssize_t total, Py_ssize_t *order)
{
    Py_ssize_t slots = 16;
    while (slots < 2 * total)
        slots *= 2;
    /* An open-addressed table of the targets seen: each slot's key, its group's first and last item. */
    PyObject **keys = PyMem_Calloc((size_t)slots, sizeof(PyObject *));
    Py_ssize_t *heads = PyMem_Malloc((size_t)slots * sizeof(Py_ssize_t));
    Py_ssize_t *tails = PyMem_Malloc((size_t)slots * sizeof(Py_ssize_t));
    Py_ssize_t *next = PyMem_Malloc((size_t)total * sizeof(Py_ssize_t)); /* each item's successor in its group */
    Py_ssize_t *groups = PyMem_Malloc((size_t)total * sizeof(Py_ssize_t)); /* slots, by first appearance */
    if (keys == NULL || heads == NULL || tails == NULL || next == NULL || groups == NULL) {
        PyMem_Free(keys);
        PyMem_Free(heads);
        PyMem_Free(tails);
        PyMem_Free(next);
        PyMem_Free(groups);
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t count = 0;
    for (Py_ssize_t i = 0; i < total; i++) {
        PyObject *target = PyTuple_GET_ITEM(PyList_GET_ITEM(items, i), 0);
        Py_ssize_t slot = (Py_ssize_t)(((uintptr_t)target >> 4) * 0x9E3779B97F4A7C15ULL >> 20) & (slots - 1);
        while (keys[slot] != NULL && keys[slot] != target)
            slot = (slot + 1) & (slots - 1);
        next[i] = -1;
        if (keys[slot] == NULL) {
            keys[slot] = target;
            heads[slot] = tails[slot] = i;
            groups[count++] = slot;
        } else {
            next[tails[slot]] = i;
            tails[slot] = i;
        }
    }
    Py_ssize_t k = 0;
    for (Py_ssize_t g = 0; g < count; g++)
        for (Py_ssize_t i = heads[groups[g]]; i >= 0; i = next[i])
            order[k++] = i;
    PyMem_Free(keys);
    PyMem_Free(heads);
    PyMem_Free(tails);
    PyMem_Free(next);
    PyMem_Free(groups);
    return 0;
}

/* One packet of a refused segmented message, alone: 1 when sent. */
static int
send_one(int fd, int packet)
{
    struct msghdr header;
    memset(&header, 0, sizeof(header));
    header.msg_name = (void *)names[packet];
    header.msg_namelen = name_lengths[packet];
    header.msg_iov = &vectors[packet];
    header.msg_iovlen = 1;
    for (int attempt = 0; attempt < SEND_ATTEMPTS; attempt++) {
        if (sendmsg(fd, &header, MSG_DONTWAIT) >= 0)
            return 1;
        if (errno != EINTR)
            break;
    }
    return 0;
}

/* Send messages[0..count): the packets sent; the others are send errors. On a full socket buffer
 * (EAGAIN) the remainder is dropped: each further try would cost a system call and fail the same way. */
static Py_ssize_t
send_chunk(int fd, int count, Py_ssize_t *send_errors)
{
    int done = 0, interrupted = 0;
    Py_ssize_t sent = 0;
    while (done < count) {
        int n = sendmmsg(fd, messages + done, (unsigned int)(count - done), MSG_DONTWAIT);
        if (n > 0) {
            for (int m = done; m < done + n; m++)
                sent += segments[m];
            done += n;
        } else if (n < 0 && errno == EINTR && ++interrupted < SEND_ATTEMPTS) {
            continue;
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            /* This message's own failure (an unreachable address, a refused size, segmentation the
             * route cannot do): a single datagram is skipped, a segmented one goes packet by packet. */
            if (segments[done] == 1) {
                *send_errors += 1;
            } else {
                for (int k = 0; k < segments[done]; k++) {
                    int ok = send_one(fd, first[done] + k);
                    sent += ok;
                    *send_errors += !ok;
                }
            }
            done += 1;
        } else {
            for (int m = done; m < count; m++)
                *send_errors += segments[m];
            break;
        }
    }
    return sent;
}

/* Whether packets i and j go to the same address, one that UDP segmentation serves. */
static inline int
same_udp_address(int i, int j)
{
    sa_family_t family = ((const struct sockaddr *)names[i])->sa_family;
    return (family == AF_INET || family == AF_INET6) && name_lengths[i] == name_lengths[j]
           && memcmp(names[i], names[j], name_lengths[i]) == 0;
}

/* Messages for protected packets 0..count: runs to one address as segmented messages. The count. */
static int
build_messages(int count)
{
    int m = 0;
    for (int i = 0; i < count; m++) {
        int size = (int)vectors[i].iov_len, k = 1, bytes = size;
        while (i + k < count && k < GSO_SEGMENTS && same_udp_address(i, i + k)
               && (int)vectors[i + k].iov_len <= size && bytes + (int)vectors[i + k].iov_len <= GSO_BYTES) {
            bytes += (int)vectors[i + k].iov_len;
            k++;
            if ((int)vectors[i + k - 1].iov_len < size) /* a shorter one ends the run */
                break;
        }
        struct msghdr *header = &messages[m].msg_hdr;
        memset(header, 0, sizeof(*header));
        /* Read by the kernel only; the bytes object lives in `items` for the whole call. */
        header->msg_name = (void *)names[i];
        header->msg_namelen = name_lengths[i];
        header->msg_iov = &vectors[i];
        header->msg_iovlen = (size_t)k;
        if (k > 1) {
            header->msg_control = controls[m].space;
            header->msg_controllen = sizeof(controls[m].space);
            struct cmsghdr *control = CMSG_FIRSTHDR(header);
            control->cmsg_level = SOL_UDP;
            control->cmsg_type = UDP_SEGMENT;
            control->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            uint16_t segment = (uint16_t)size;
            memcpy(CMSG_DATA(control), &segment, sizeof(segment));
        }
        messages[m].msg_len = 0;
        segments[m] = k;
        first[m] = i;
        i += k;
    }
    return m;
}

static PyObject *
protect_and_send(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "protect_and_send(fd, protect, items) takes 3 arguments");
        return NULL;
    }
    long fd = PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    if (fd < 0 || fd > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "fd is not a file descriptor");
        return NULL;
    }
    protect_fn protect = (protect_fn)(uintptr_t)PyLong_AsVoidPtr(args[1]);
    if (protect == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "a null srtp_protect");
        return NULL;
    }
    if (!PyList_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "items is a list");
        return NULL;
    }
    PyObject *items = args[2];
    Py_ssize_t total = PyList_GET_SIZE(items);
    item_t item;
    /* Every item checked before anything is sent: a malformed one raises with nothing half done. */
    for (Py_ssize_t i = 0; i < total; i++) {
        if (read_item(PyList_GET_ITEM(items, i), &item) < 0)
            return NULL;
    }
    Py_ssize_t *order = PyMem_Malloc((size_t)(total > 0 ? total : 1) * sizeof(Py_ssize_t));
    if (order == NULL)
        return PyErr_NoMemory();
    if (group_by_target(items, total, order) < 0) {
        PyMem_Free(order);
        return NULL;
    }
    Py_ssize_t sent = 0, srtp_errors = 0, send_errors = 0;
    Py_ssize_t next = 0;
    while (next < total) {
        int count = 0;
        for (; next < total && count < CHUNK; next++) {
            read_item(PyList_GET_ITEM(items, order[next]), &item); /* checked above: cannot fail */
            if (item.length > MAX_PACKET) {
                srtp_errors++;
                continue;
            }
            unsigned char *buffer = buffers[count];
            int length = (int)item.length;
            memcpy(buffer, item.packet, (size_t)length);
            if (protect(item.srtp, buffer, &length) != 0 || length < 0 || length > SLOT) {
                srtp_errors++;
                continue;
            }
            vectors[count].iov_base = buffer;
            vectors[count].iov_len = (size_t)length;
            names[count] = item.address;
            name_lengths[count] = (socklen_t)item.address_length;
            count++;
        }
        if (count > 0)
            sent += send_chunk((int)fd, build_messages(count), &send_errors);
    }
    PyMem_Free(order);
    PyObject *counts[3] = {PyLong_FromSsize_t(sent), PyLong_FromSsize_t(srtp_errors), PyLong_FromSsize_t(send_errors)};
    PyObject *result = counts[0] != NULL && counts[1] != NULL && counts[2] != NULL
                       ? PyTuple_Pack(3, counts[0], counts[1], counts[2]) : NULL;
    for (int i = 0; i < 3; i++)
        Py_XDECREF(counts[i]);
    return result; /* not Py_BuildValue: its format is parsed anew on every call */
}

static PyMethodDef methods[] = {
    {"protect_and_send", (PyCFunction)(void (*)(void))protect_and_send, METH_FASTCALL,
     "protect_and_send(fd, protect, items) -> (sent, srtp_errors, send_errors)\n\n"
     "SRTP-protect each item's packet with srtp_protect (the function at address `protect`) under the\n"
     "srtp_t its target names, and send them from socket `fd` with sendmmsg, each to its target's\n"
     "sockaddr. items: [(target, packet)], target: (srtp_t address, sockaddr bytes, ...), the srtp_t\n"
     "kept alive by the caller. A packet over 1356 bytes or refused by libsrtp is an SRTP error; a\n"
     "datagram the socket refuses (its buffer full: the rest of its chunk) is a send error. Consecutive\n"
     "packets to one UDP address go as one message with UDP segmentation (UDP_SEGMENT). Items go grouped\n"
     "by target object: each target's in their order, the targets in the order they first appear."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "appliance.rtc._sendbatch",
    "SRTP protect and sendmmsg for the media port's batches (sendbatch.py is its Python side).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__sendbatch(void)
{
    return PyModule_Create(&module);
}
