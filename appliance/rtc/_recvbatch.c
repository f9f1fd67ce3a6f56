/* The media port's compiled receive path (issue 17): read a socket's waiting datagrams with recvmmsg,
 * and SRTP-unprotect a packet with libsrtp's own srtp_unprotect.
 *
 * Per datagram, Python's recvfrom cost a system call and a 64 KiB buffer allocated then shrunk, and
 * pylibsrtp's unprotect a Python wrapper and two cffi buffer copies. Here one recvmmsg reads up to
 * CHUNK datagrams, and an unprotect is one copy in, libsrtp, one bytes object out.
 *
 * libsrtp is not linked: as in _sendbatch.c, the caller passes the address of srtp_unprotect (or
 * srtp_unprotect_rtcp) as pylibsrtp's copy of libsrtp has it, and the session's srtp_t (recvbatch.py
 * finds both and checks the functions' signature). The GIL stays held: the static buffers below rely
 * on no two calls running at once.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#define CHUNK 64 /* datagrams per recvmmsg: the shell's READ_BATCH */
#define RECV_SIZE 65536 /* what Python's recvfrom path reads: any UDP datagram whole */
/* pylibsrtp's bound: its 1500-byte buffer (no trailer to add on unprotect), so that both paths refuse
 * the same packets. */
#define MAX_SRTP 1500

/* srtp_err_status_t srtp_unprotect(srtp_t ctx, void *srtp_hdr, int *len_ptr), libsrtp 2 (an enum is
 * an int); srtp_unprotect_rtcp has the same shape. */
typedef int (*unprotect_fn)(void *ctx, void *srtp_hdr, int *len_ptr);

/* Only the pages a datagram fills are ever touched: the kernel writes what arrived, no more. */
static unsigned char buffers[CHUNK][RECV_SIZE];
static struct sockaddr_storage names[CHUNK];
static struct mmsghdr messages[CHUNK];
static struct iovec vectors[CHUNK];
static unsigned char srtp_buffer[MAX_SRTP];

/* The address as Python's recvfrom gives it: (host, port) for IPv4, (host, port, flowinfo, scope_id)
 * for IPv6; None for another family (not one a UDP socket of the port has). */
static PyObject *
address(const struct sockaddr_storage *name)
{
    char host[INET6_ADDRSTRLEN];
    if (name->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)name;
        if (inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host)) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(si)", host, (int)ntohs(in->sin_port));
    }
    if (name->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)name;
        if (inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host)) == NULL)
            return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(siII)", host, (int)ntohs(in6->sin6_port), (unsigned int)ntohl(in6->sin6_flowinfo),
                             (unsigned int)in6->sin6_scope_id);
    }
    Py_RETURN_NONE;
}

/* Append messages[0..count) to `out` as (bytes, address) tuples; -1 with an exception set on failure.
 * A run of datagrams from one source (the usual case: one peer's burst) shares one address tuple. */
static int
append_received(PyObject *out, int count)
{
    PyObject *previous = NULL;
    socklen_t previous_length = 0;
    const struct sockaddr_storage *previous_name = NULL;
    for (int i = 0; i < count; i++) {
        socklen_t length = messages[i].msg_hdr.msg_namelen;
        PyObject *source;
        if (previous != NULL && length == previous_length && memcmp(&names[i], previous_name, length) == 0) {
            source = Py_NewRef(previous);
        } else {
            source = address(&names[i]);
            if (source == NULL)
                goto failed;
            Py_XDECREF(previous);
            previous = Py_NewRef(source);
            previous_length = length;
            previous_name = &names[i];
        }
        PyObject *data = PyBytes_FromStringAndSize((const char *)buffers[i], (Py_ssize_t)messages[i].msg_len);
        if (data == NULL) {
            Py_DECREF(source);
            goto failed;
        }
        PyObject *item = PyTuple_Pack(2, data, source);
        Py_DECREF(data);
        Py_DECREF(source);
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            goto failed;
        }
        Py_DECREF(item);
    }
    Py_XDECREF(previous);
    return 0;
failed:
    Py_XDECREF(previous);
    return -1;
}

static PyObject *
recv_batch(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "recv_batch(fd, limit) takes 2 arguments");
        return NULL;
    }
    long fd = PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    if (fd < 0 || fd > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "fd is not a file descriptor");
        return NULL;
    }
    long limit = PyLong_AsLong(args[1]);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    if (limit < 0 || limit > CHUNK) {
        PyErr_Format(PyExc_ValueError, "limit must be 0 to %d", CHUNK);
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    /* Like the Python loop it stands for: each datagram and each error (an ICMP error queued on the
     * socket, given by one call and then cleared) uses one of `limit`'s turns. */
    long left = limit;
    while (left > 0) {
        int want = (int)left;
        for (int i = 0; i < want; i++) {
            vectors[i].iov_base = buffers[i];
            vectors[i].iov_len = RECV_SIZE;
            struct msghdr *header = &messages[i].msg_hdr;
            memset(header, 0, sizeof(*header));
            header->msg_name = &names[i];
            header->msg_namelen = sizeof(names[i]);
            header->msg_iov = &vectors[i];
            header->msg_iovlen = 1;
            messages[i].msg_len = 0;
        }
        int n = recvmmsg((int)fd, messages, (unsigned int)want, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                break;
            left -= 1;
            continue;
        }
        if (append_received(out, n) < 0) {
            Py_DECREF(out);
            return NULL;
        }
        left -= n;
        if (n < want) /* the queue is empty (or an error waits: the next readiness reads it) */
            break;
    }
    return out;
}

static PyObject *
unprotect(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "unprotect(function, srtp, data) takes 3 arguments");
        return NULL;
    }
    unprotect_fn function = (unprotect_fn)(uintptr_t)PyLong_AsVoidPtr(args[0]);
    if (function == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "a null function");
        return NULL;
    }
    void *srtp = PyLong_AsVoidPtr(args[1]);
    if (srtp == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "a null srtp_t");
        return NULL;
    }
    if (!PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "data is bytes");
        return NULL;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(args[2]);
    if (size > MAX_SRTP)
        Py_RETURN_NONE;
    int length = (int)size;
    memcpy(srtp_buffer, PyBytes_AS_STRING(args[2]), (size_t)length);
    if (function(srtp, srtp_buffer, &length) != 0 || length < 0 || length > (int)size)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)srtp_buffer, length);
}

static PyMethodDef methods[] = {
    {"recv_batch", (PyCFunction)(void (*)(void))recv_batch, METH_FASTCALL,
     "recv_batch(fd, limit) -> [(data, address)]\n\n"
     "Read up to `limit` (at most 64) datagrams waiting on the non-blocking UDP socket `fd` with\n"
     "recvmmsg, each with its source address as socket.recvfrom gives it. An error queued on the socket\n"
     "(ICMP) is skipped and uses one of the `limit` turns; an empty queue ends the batch."},
    {"unprotect", (PyCFunction)(void (*)(void))unprotect, METH_FASTCALL,
     "unprotect(function, srtp, data) -> bytes | None\n\n"
     "SRTP- or SRTCP-unprotect `data` with `function` (the address of srtp_unprotect or\n"
     "srtp_unprotect_rtcp) under the srtp_t at address `srtp`, kept alive by the caller. None where\n"
     "pylibsrtp would raise: a packet over 1500 bytes, or one libsrtp refuses."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "appliance.rtc._recvbatch",
    "recvmmsg and SRTP unprotect for the media port's reads (recvbatch.py is its Python side).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__recvbatch(void)
{
    return PyModule_Create(&module);
}
