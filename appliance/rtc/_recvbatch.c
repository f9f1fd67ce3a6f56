/* The media port's compiled receive path (issue 17): `receive` reads a socket's waiting datagrams with
 * recvmmsg; SRTP and SRTCP from a session's selected path are unprotected with libsrtp's own
 * srtp_unprotect where recvmmsg put them and go straight to the session's handler; every other datagram
 * goes to the port's Python.
 *
 * Per datagram, Python's recvfrom cost a system call and a 64 KiB buffer allocated then shrunk, and
 * pylibsrtp's unprotect a Python wrapper and two cffi buffer copies, and the port's loop over them its
 * bytecode. Here one recvmmsg reads up to CHUNK datagrams, and an SRTP packet becomes one bytes object,
 * the plain packet.
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

static PyObject *rtp_name, *rtcp_name, *handler_name, *rx_context_name, *unmatched_name, *srtp_errors_name;

/* counters.<name> += add, keeping any exception already set; -1 when it cannot. */
static int
count(PyObject *counters, PyObject *name, Py_ssize_t add)
{
    if (add == 0)
        return 0;
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyObject *old = PyObject_GetAttr(counters, name);
    PyObject *addend = old != NULL ? PyLong_FromSsize_t(add) : NULL;
    PyObject *sum = addend != NULL ? PyNumber_Add(old, addend) : NULL;
    int rc = sum != NULL ? PyObject_SetAttr(counters, name, sum) : -1;
    Py_XDECREF(old);
    Py_XDECREF(addend);
    Py_XDECREF(sum);
    if (type != NULL) {
        PyErr_Clear();
        PyErr_Restore(type, value, traceback);
    }
    return rc;
}

typedef struct {
    PyObject *sessions, *fallback, *listener, *now;
    unprotect_fn rtp, rtcp;
    Py_ssize_t unmatched, srtp_errors;
} dispatch_t;

/* Datagram i of the last recvmmsg, from `source`, as MediaPort.datagram_received would take it: -1
 * with an exception (from a handler or the port). */
static int
dispatch_one(dispatch_t *d, int i, PyObject *source)
{
    unsigned char *data = buffers[i];
    int length = (int)messages[i].msg_len;
    if (length >= 12 && data[0] > 127 && data[0] < 192) {
        PyObject *session = PyDict_GetItemWithError(d->sessions, source);
        if (session == NULL && PyErr_Occurred())
            return -1;
        if (session != NULL) {
            Py_INCREF(session); /* the handler may close it */
            PyObject *context = PyObject_GetAttr(session, rx_context_name);
            PyObject *handler = context != NULL ? PyObject_GetAttr(session, handler_name) : NULL;
            Py_DECREF(session);
            if (handler == NULL) {
                Py_XDECREF(context);
                return -1;
            }
            int rc = 0;
            if (context == Py_None) {
                d->unmatched++;
            } else {
                void *srtp = PyLong_AsVoidPtr(context);
                /* RFC 5761 4: RTCP packet types 192-223 sit where RTP's marker bit and payload types
                 * 64-95 would. */
                int rtcp = data[1] > 191 && data[1] < 224, out = length;
                if (srtp == NULL) {
                    rc = -1;
                    if (!PyErr_Occurred())
                        PyErr_SetString(PyExc_ValueError, "a null srtp_t");
                } else if (length > MAX_SRTP || (rtcp ? d->rtcp : d->rtp)(srtp, data, &out) != 0 || out < 0
                           || out > length) {
                    d->srtp_errors++;
                } else {
                    PyObject *packet = PyBytes_FromStringAndSize((const char *)data, out);
                    PyObject *call[] = {handler, packet, d->now};
                    PyObject *result = packet != NULL ? PyObject_VectorcallMethod(rtcp ? rtcp_name : rtp_name, call,
                                                                                  3 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                                                                  NULL) : NULL;
                    Py_XDECREF(packet);
                    rc = result != NULL ? 0 : -1;
                    Py_XDECREF(result);
                }
            }
            Py_DECREF(context);
            Py_DECREF(handler);
            return rc;
        }
    }
    PyObject *bytes = PyBytes_FromStringAndSize((const char *)data, length);
    if (bytes == NULL)
        return -1;
    PyObject *call[] = {d->listener, bytes, source, d->now};
    PyObject *result = PyObject_Vectorcall(d->fallback, call, 4, NULL);
    Py_DECREF(bytes);
    Py_XDECREF(result);
    return result != NULL ? 0 : -1;
}

/* The address tuple made last, kept across calls: a call's datagrams mostly come from the source the
 * last one's came from (a publisher), so its tuple is made once, not once per readiness. */
static PyObject *last_source;
static struct sockaddr_storage last_name;
static socklen_t last_length;

/* Datagrams 0..count of the last recvmmsg through dispatch_one, a run from one source sharing one
 * address tuple; -1 with an exception. */
static int
dispatch_received(dispatch_t *d, int count)
{
    for (int i = 0; i < count; i++) {
        socklen_t length = messages[i].msg_hdr.msg_namelen;
        if (length > (socklen_t)sizeof(names[i]))
            length = (socklen_t)sizeof(names[i]);
        if (last_source == NULL || length != last_length || memcmp(&names[i], &last_name, length) != 0) {
            PyObject *source = address(&names[i]);
            if (source == NULL)
                return -1;
            Py_XSETREF(last_source, source);
            memcpy(&last_name, &names[i], length);
            last_length = length;
        }
        PyObject *source = Py_NewRef(last_source); /* held while the handlers run Python */
        int rc = dispatch_one(d, i, source);
        Py_DECREF(source);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static PyObject *
receive(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError,
                        "receive(fd, limit, sessions, rtp, rtcp, fallback, listener, counters, now) takes 9 arguments");
        return NULL;
    }
    long fd = PyLong_AsLong(args[0]);
    if (fd == -1 && PyErr_Occurred())
        return NULL;
    long limit = PyLong_AsLong(args[1]);
    if (limit == -1 && PyErr_Occurred())
        return NULL;
    if (fd < 0 || fd > INT_MAX || limit < 0 || limit > CHUNK) {
        PyErr_Format(PyExc_ValueError, "fd must be a file descriptor and limit 0 to %d", CHUNK);
        return NULL;
    }
    dispatch_t d = {args[2], args[5], args[6], args[8], NULL, NULL, 0, 0};
    d.rtp = (unprotect_fn)(uintptr_t)PyLong_AsVoidPtr(args[3]);
    d.rtcp = d.rtp != NULL ? (unprotect_fn)(uintptr_t)PyLong_AsVoidPtr(args[4]) : NULL;
    if (d.rtp == NULL || d.rtcp == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "a null function");
        return NULL;
    }
    if (!PyDict_CheckExact(d.sessions)) {
        PyErr_SetString(PyExc_TypeError, "sessions is a dict");
        return NULL;
    }
    /* Like the Python loop it stands for (MediaIO._on_readable without the extension): each datagram and
     * each error (an ICMP error queued on the socket, given by one call and then cleared) uses one of
     * `limit`'s turns. */
    long left = limit;
    int failed = 0;
    while (left > 0 && !failed) {
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
        failed = dispatch_received(&d, n) < 0;
        left -= n;
        if (n < want) /* the queue is empty (or an error waits: the next readiness reads it) */
            break;
    }
    PyObject *counters = args[7];
    if (count(counters, unmatched_name, d.unmatched) < 0 || count(counters, srtp_errors_name, d.srtp_errors) < 0)
        failed = 1;
    if (failed)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"receive", (PyCFunction)(void (*)(void))receive, METH_FASTCALL,
     "receive(fd, limit, sessions, rtp, rtcp, fallback, listener, counters, now)\n\n"
     "Read up to `limit` (at most 64) datagrams waiting on the non-blocking UDP socket `fd` with recvmmsg\n"
     "(an error queued on the socket, ICMP, is skipped and uses a turn) and handle each: SRTP (SRTCP)\n"
     "from an address in `sessions` unprotected in place with the function at address `rtp` (`rtcp`)\n"
     "under the session's rx_context (an srtp_t's address, kept alive by the caller) and handed to\n"
     "session.handler.rtp (rtcp)(packet, now); one over 1500 bytes or refused by libsrtp counted on\n"
     "counters.srtp_errors, one for a session without a context on counters.unmatched; any other\n"
     "datagram to fallback(listener, data, address, now), the address as recvfrom gives it. An exception\n"
     "from a handler or `fallback` ends the call."},
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
    PyObject **interned[] = {&rtp_name, &rtcp_name, &handler_name, &rx_context_name, &unmatched_name,
                             &srtp_errors_name};
    const char *const strings[] = {"rtp", "rtcp", "handler", "rx_context", "unmatched", "srtp_errors"};
    for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++)
        if ((*interned[i] = PyUnicode_InternFromString(strings[i])) == NULL)
            return NULL;
    return PyModule_Create(&module);
}
