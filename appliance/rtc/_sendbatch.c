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
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

/* pylibsrtp's bound: its 1500-byte buffer less SRTP_MAX_TRAILER_LEN, so that both paths refuse the same
 * packets. */
#define MAX_PACKET 1356
#define MAX_TRAILER (16 + 128) /* SRTP_MAX_TAG_LEN + SRTP_MAX_MKI_LEN */
#define SLOT (MAX_PACKET + MAX_TRAILER)
#define CHUNK 64 /* datagrams per sendmmsg */
#define SEND_ATTEMPTS 4 /* sendmmsg calls interrupted by a signal before a chunk's remainder is dropped */

/* srtp_err_status_t srtp_protect(srtp_t ctx, void *rtp_hdr, int *len_ptr), libsrtp 2 (an enum is an int). */
typedef int (*protect_fn)(void *ctx, void *rtp_hdr, int *len_ptr);

static unsigned char buffers[CHUNK][SLOT];
static struct mmsghdr messages[CHUNK];
static struct iovec vectors[CHUNK];

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

/* Send messages[0..count): the sent count, the rest are send errors. On a full socket buffer (EAGAIN) the
 * remainder is dropped: each further try would cost a system call and fail the same way. */
static int
send_chunk(int fd, int count, Py_ssize_t *send_errors)
{
    int done = 0, sent = 0, interrupted = 0;
    while (done < count) {
        int n = sendmmsg(fd, messages + done, (unsigned int)(count - done), MSG_DONTWAIT);
        if (n > 0) {
            done += n;
            sent += n;
        } else if (n < 0 && errno == EINTR && ++interrupted < SEND_ATTEMPTS) {
            continue;
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            /* This datagram's own failure (an unreachable address, a refused size): skip it. */
            *send_errors += 1;
            done += 1;
        } else {
            *send_errors += count - done;
            break;
        }
    }
    return sent;
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
    Py_ssize_t sent = 0, srtp_errors = 0, send_errors = 0;
    Py_ssize_t next = 0;
    while (next < total) {
        int count = 0;
        for (; next < total && count < CHUNK; next++) {
            read_item(PyList_GET_ITEM(items, next), &item); /* checked above: cannot fail */
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
            struct msghdr *header = &messages[count].msg_hdr;
            memset(header, 0, sizeof(*header));
            /* Read by the kernel only; the bytes object lives in `items` for the whole call. */
            header->msg_name = (void *)item.address;
            header->msg_namelen = (socklen_t)item.address_length;
            header->msg_iov = &vectors[count];
            header->msg_iovlen = 1;
            messages[count].msg_len = 0;
            count++;
        }
        if (count > 0)
            sent += send_chunk((int)fd, count, &send_errors);
    }
    return Py_BuildValue("(nnn)", sent, srtp_errors, send_errors);
}

static PyMethodDef methods[] = {
    {"protect_and_send", (PyCFunction)(void (*)(void))protect_and_send, METH_FASTCALL,
     "protect_and_send(fd, protect, items) -> (sent, srtp_errors, send_errors)\n\n"
     "SRTP-protect each item's packet with srtp_protect (the function at address `protect`) under the\n"
     "srtp_t its target names, and send them from socket `fd` with sendmmsg, each to its target's\n"
     "sockaddr. items: [(target, packet)], target: (srtp_t address, sockaddr bytes, ...), the srtp_t\n"
     "kept alive by the caller. A packet over 1356 bytes or refused by libsrtp is an SRTP error; a\n"
     "datagram the socket refuses (its buffer full: the rest of its chunk) is a send error."},
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
