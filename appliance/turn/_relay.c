/* TURN's compiled relay for connected UDP sockets (issue 17): the event loop's reader callbacks of a
 * channel's socket connected to its peer (`peer_readable`) and of a UDP client's connected socket
 * (`client_readable`), in C, so that a relayed datagram costs no Python frame.
 *
 * Each call reads one datagram, as TurnIO._on_connected_peer_readable and _on_connected_client_readable
 * do, and relays channel data in the common case: what TurnServer.from_peer and _channel_to_peer do
 * (allocation, permission, the relay budget's charge, the counters, the channel) and the sink's send.
 * The state stays in the Python objects, whose slots are read and written here directly: `configure`
 * takes the classes once and finds each slot's offset from its member descriptor (an exact type match
 * is checked per object). Anything else (an indication, a STUN message, a missing allocation, permission
 * or channel, a charge that needs a refill, padding) goes to the reader's Python `fallback` with the
 * datagram's bytes before anything is changed, so both paths leave the same state and send the same
 * bytes. The GIL stays held: the static buffer below relies on no two calls running at once.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "../_slots.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#define RECV_SIZE 65536 /* what the Python callbacks read: any UDP datagram whole */
#define HEAD 4          /* a ChannelData header */

/* A peer's datagram is read behind room for the header, so that it goes out without a copy. */
static unsigned char buffer[HEAD + RECV_SIZE];

/* The slots read or written, by class; the order of each list is its enum's. */
enum { A_PERMISSIONS, A_CHANNELS, A_PEER_CHANNELS, A_PAD, A_CLIENT_SINK, A_REPLY_ADDR, A_PACKET_TOKENS,
       A_BYTE_TOKENS, A_BYTES_FROM_CLIENT, A_PACKETS_FROM_CLIENT, A_BYTES_TO_CLIENT, A_PACKETS_TO_CLIENT,
       A_COUNT };
static const char *const allocation_names[A_COUNT] = {
    "permissions", "channels", "peer_channels", "pad", "client_sink", "reply_addr", "packet_tokens",
    "byte_tokens", "bytes_from_client", "packets_from_client", "bytes_to_client", "packets_to_client"};
enum { C_NUMBER, C_PEER, C_HOST, C_SINK, C_COUNT };
static const char *const channel_names[C_COUNT] = {"number", "peer", "host", "sink"};
enum { S_FD, S_COUNT };
static const char *const sink_names[S_COUNT] = {"fd"};

static layout_t allocation_layout, channel_layout, sink_layout;
static PyObject *sendto_name, *send_errors_name;

static PyObject *
configure(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "configure(Allocation, Channel, ConnectedSink) takes 3 arguments");
        return NULL;
    }
    if (find_layout(args[0], allocation_names, A_COUNT, &allocation_layout) < 0
        || find_layout(args[1], channel_names, C_COUNT, &channel_layout) < 0
        || find_layout(args[2], sink_names, S_COUNT, &sink_layout) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ---- Reader: what one connected socket's callback needs ------------------------------------------ */

typedef struct {
    PyObject_HEAD
    int fd;               /* the connected socket read */
    PyObject *io;         /* the TurnIO, whose send_errors are counted */
    PyObject *fallback;   /* fallback(data, arg): the Python callback's work after its recv */
    PyObject *arg;        /* what the Python callback was given beside the socket */
    PyObject *table;      /* the dict the allocation is found in: the core's by relay id, a listener's by remote */
    PyObject *key;        /* the relay id, or the client's address */
    PyObject *peer;       /* the peer's address (peer readers; None for clients) */
    PyObject *host;       /* peer[0] */
} ReaderObject;

static int
reader_traverse(ReaderObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->io);
    Py_VISIT(self->fallback);
    Py_VISIT(self->arg);
    Py_VISIT(self->table);
    Py_VISIT(self->key);
    Py_VISIT(self->peer);
    Py_VISIT(self->host);
    return 0;
}

static int
reader_clear(ReaderObject *self)
{
    Py_CLEAR(self->io);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->arg);
    Py_CLEAR(self->table);
    Py_CLEAR(self->key);
    Py_CLEAR(self->peer);
    Py_CLEAR(self->host);
    return 0;
}

static void
reader_dealloc(ReaderObject *self)
{
    PyObject_GC_UnTrack(self);
    reader_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
reader_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    int fd;
    PyObject *io, *fallback, *arg, *table, *key, *peer;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "Reader takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "iOOOO!OO:Reader", &fd, &io, &fallback, &arg, &PyDict_Type, &table, &key, &peer))
        return NULL;
    PyObject *host = Py_None;
    if (peer != Py_None) {
        if (!PyTuple_CheckExact(peer) || PyTuple_GET_SIZE(peer) < 2) {
            PyErr_SetString(PyExc_TypeError, "a peer is an address tuple");
            return NULL;
        }
        host = PyTuple_GET_ITEM(peer, 0);
    }
    ReaderObject *self = (ReaderObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->fd = fd;
    self->io = Py_NewRef(io);
    self->fallback = Py_NewRef(fallback);
    self->arg = Py_NewRef(arg);
    self->table = Py_NewRef(table);
    self->key = Py_NewRef(key);
    self->peer = Py_NewRef(peer);
    self->host = Py_NewRef(host);
    return (PyObject *)self;
}

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "appliance.turn._relay.Reader",
    .tp_doc = PyDoc_STR("Reader(fd, io, fallback, arg, table, key, peer): one connected socket's callback state."),
    .tp_basicsize = sizeof(ReaderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = reader_new,
    .tp_traverse = (traverseproc)reader_traverse,
    .tp_clear = (inquiry)reader_clear,
    .tp_dealloc = (destructor)reader_dealloc,
};

/* ---- the relay ----------------------------------------------------------------------------------- */

/* io.send_errors += 1, as the Python callbacks count a send's OSError; -1 with an exception. */
static int
count_send_error(PyObject *io)
{
    PyObject *old = PyObject_GetAttr(io, send_errors_name);
    PyObject *one = old != NULL ? PyLong_FromLong(1) : NULL;
    PyObject *sum = one != NULL ? PyNumber_Add(old, one) : NULL;
    int rc = sum != NULL ? PyObject_SetAttr(io, send_errors_name, sum) : -1;
    Py_XDECREF(old);
    Py_XDECREF(one);
    Py_XDECREF(sum);
    return rc;
}

/* Whether `object` is of the layout's class with every slot of the layout set. */
static int
is_whole(PyObject *object, const layout_t *layout, int count)
{
    if (object == NULL || Py_TYPE(object) != layout->type)
        return 0;
    for (int i = 0; i < count; i++)
        if (*(PyObject **)((char *)object + layout->offsets[i]) == NULL)
            return 0;
    return 1;
}

/* The allocation in the reader's table if it is one the compiled path takes (borrowed); NULL, with an
 * exception or without one (then the Python path takes the datagram). */
static PyObject *
find_allocation(ReaderObject *reader)
{
    PyObject *allocation = PyDict_GetItemWithError(reader->table, reader->key);
    if (!is_whole(allocation, &allocation_layout, A_COUNT)
        || !PyDict_CheckExact(SLOT(allocation, allocation_layout, A_PERMISSIONS)))
        return NULL;
    return allocation;
}

/* A count slot's value, or -1 when it is not a small enough int for the compiled path. */
static long long
count_of(PyObject *value)
{
    if (!PyLong_CheckExact(value))
        return -1;
    int overflow;
    long long n = PyLong_AsLongLongAndOverflow(value, &overflow); /* an int's only failure: overflow */
    return overflow != 0 || n < 0 || n > LLONG_MAX / 2 ? -1 : n;
}

/* RelayBudget.charge(size) when it needs no refill, with the two counts of one direction (bytes, then
 * packets) raised: 1 when done, 0 when the Python path must take the packet (nothing is changed), -1
 * with an exception. */
static int
charge(PyObject *allocation, long size, int bytes_index)
{
    PyObject *packet_tokens = SLOT(allocation, allocation_layout, A_PACKET_TOKENS);
    PyObject *byte_tokens = SLOT(allocation, allocation_layout, A_BYTE_TOKENS);
    if (!PyFloat_CheckExact(packet_tokens) || !PyFloat_CheckExact(byte_tokens))
        return 0;
    /* The same subtractions as charge's, in doubles as Python does them (a size is exact in one). */
    double packets = PyFloat_AS_DOUBLE(packet_tokens) - 1;
    double octets = PyFloat_AS_DOUBLE(byte_tokens) - (double)size;
    if (!(packets >= 0 && octets >= 0))
        return 0; /* a refill, at the Python path's `now` */
    long long bytes = count_of(SLOT(allocation, allocation_layout, bytes_index));
    long long count = count_of(SLOT(allocation, allocation_layout, bytes_index + 1));
    if (bytes < 0 || count < 0)
        return 0;
    PyObject *values[4] = {PyFloat_FromDouble(packets), PyFloat_FromDouble(octets), PyLong_FromLongLong(bytes + size),
                           PyLong_FromLongLong(count + 1)};
    if (values[0] == NULL || values[1] == NULL || values[2] == NULL || values[3] == NULL) {
        for (int i = 0; i < 4; i++)
            Py_XDECREF(values[i]);
        return -1;
    }
    slot_set(allocation, &allocation_layout, A_PACKET_TOKENS, values[0]);
    slot_set(allocation, &allocation_layout, A_BYTE_TOKENS, values[1]);
    slot_set(allocation, &allocation_layout, bytes_index, values[2]);
    slot_set(allocation, &allocation_layout, bytes_index + 1, values[3]);
    return 1;
}

/* `length` bytes at `data` out of `sink` to `addr`, as the Python callbacks send what the core returns:
 * on the socket's descriptor for a connected socket's sink, else through sink.sendto. */
static PyObject *
send_out(ReaderObject *reader, PyObject *sink, PyObject *addr, const unsigned char *data, Py_ssize_t length)
{
    if (is_whole(sink, &sink_layout, S_COUNT) && PyLong_CheckExact(SLOT(sink, sink_layout, S_FD))) {
        /* -1 once the shell has closed the socket: send fails as the closed socket's would. */
        int fd = (int)PyLong_AsLong(SLOT(sink, sink_layout, S_FD));
        if (fd == -1 && PyErr_Occurred())
            return NULL;
        ssize_t sent;
        do
            sent = send(fd, data, (size_t)length, MSG_DONTWAIT);
        while (sent < 0 && errno == EINTR);
        if (sent < 0 && count_send_error(reader->io) < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    Py_INCREF(sink); /* sendto may drop the allocation's or channel's hold on them */
    Py_INCREF(addr);
    PyObject *bytes = PyBytes_FromStringAndSize((const char *)data, length);
    PyObject *call[] = {sink, bytes, addr};
    PyObject *result = bytes != NULL ? PyObject_VectorcallMethod(sendto_name, call, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                                                 NULL) : NULL;
    Py_XDECREF(bytes);
    Py_DECREF(sink);
    Py_DECREF(addr);
    if (result == NULL && PyErr_ExceptionMatches(PyExc_OSError)) {
        PyErr_Clear();
        if (count_send_error(reader->io) < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    return result;
}

/* The datagram to the reader's Python fallback, as the Python callback would have handled it. */
static PyObject *
fall_back(ReaderObject *reader, const unsigned char *data, Py_ssize_t length)
{
    PyObject *bytes = PyBytes_FromStringAndSize((const char *)data, length);
    if (bytes == NULL)
        return NULL;
    PyObject *call[] = {bytes, reader->arg};
    PyObject *result = PyObject_Vectorcall(reader->fallback, call, 2, NULL);
    Py_DECREF(bytes);
    return result;
}

/* One datagram from the socket into `into`: its length, or -1 when there is none to relay (as the Python
 * callbacks return on recv's OSError: nothing after all, or a remote's ICMP error). */
static Py_ssize_t
receive(ReaderObject *reader, unsigned char *into)
{
    ssize_t length;
    do
        length = recv(reader->fd, into, RECV_SIZE, MSG_DONTWAIT);
    while (length < 0 && errno == EINTR);
    return length;
}

static PyObject *
peer_readable(PyObject *Py_UNUSED(module), PyObject *arg)
{
    if (!Py_IS_TYPE(arg, &ReaderType) || allocation_layout.type == NULL) {
        PyErr_SetString(PyExc_TypeError, "peer_readable takes a Reader, once configured");
        return NULL;
    }
    ReaderObject *reader = (ReaderObject *)arg;
    unsigned char *data = buffer + HEAD;
    Py_ssize_t size = receive(reader, data);
    if (size < 0)
        Py_RETURN_NONE;
    PyObject *allocation = find_allocation(reader);
    if (allocation == NULL)
        goto python;
    PyObject *permission = PyDict_GetItemWithError(SLOT(allocation, allocation_layout, A_PERMISSIONS), reader->host);
    if (permission == NULL)
        goto python;
    PyObject *peer_channels = SLOT(allocation, allocation_layout, A_PEER_CHANNELS);
    if (!PyDict_CheckExact(peer_channels))
        goto python;
    PyObject *channel = PyDict_GetItemWithError(peer_channels, reader->peer);
    if (!is_whole(channel, &channel_layout, C_COUNT) || SLOT(allocation, allocation_layout, A_PAD) != Py_False
        || size > 0xFFFF)
        goto python;
    PyObject *number_object = SLOT(channel, channel_layout, C_NUMBER);
    long number = PyLong_CheckExact(number_object) ? PyLong_AsLong(number_object) : -1;
    if (number < 0 || number > 0xFFFF) {
        PyErr_Clear();
        goto python;
    }
    int charged = charge(allocation, (long)size, A_BYTES_TO_CLIENT);
    if (charged < 0)
        return NULL;
    if (charged == 0)
        goto python;
    buffer[0] = (unsigned char)(number >> 8);
    buffer[1] = (unsigned char)number;
    buffer[2] = (unsigned char)(size >> 8);
    buffer[3] = (unsigned char)size;
    return send_out(reader, SLOT(allocation, allocation_layout, A_CLIENT_SINK),
                    SLOT(allocation, allocation_layout, A_REPLY_ADDR), buffer, HEAD + size);
python:
    if (PyErr_Occurred())
        return NULL;
    return fall_back(reader, data, size);
}

static PyObject *
client_readable(PyObject *Py_UNUSED(module), PyObject *arg)
{
    if (!Py_IS_TYPE(arg, &ReaderType) || allocation_layout.type == NULL) {
        PyErr_SetString(PyExc_TypeError, "client_readable takes a Reader, once configured");
        return NULL;
    }
    ReaderObject *reader = (ReaderObject *)arg;
    unsigned char *frame = buffer;
    Py_ssize_t length = receive(reader, frame);
    if (length < 0)
        Py_RETURN_NONE;
    if (length < HEAD || frame[0] < 0x40 || frame[0] > 0x7F) /* not ChannelData */
        goto python;
    PyObject *allocation = find_allocation(reader);
    if (allocation == NULL)
        goto python;
    PyObject *channels = SLOT(allocation, allocation_layout, A_CHANNELS);
    if (!PyDict_CheckExact(channels))
        goto python;
    PyObject *number = PyLong_FromLong(frame[0] << 8 | frame[1]);
    if (number == NULL)
        return NULL;
    PyObject *channel = PyDict_GetItemWithError(channels, number);
    Py_DECREF(number);
    long size = frame[2] << 8 | frame[3];
    if (!is_whole(channel, &channel_layout, C_COUNT) || size > length - HEAD)
        goto python;
    int permitted = PyDict_Contains(SLOT(allocation, allocation_layout, A_PERMISSIONS),
                                    SLOT(channel, channel_layout, C_HOST));
    if (permitted < 0)
        return NULL;
    if (permitted == 0)
        goto python;
    int charged = charge(allocation, size, A_BYTES_FROM_CLIENT);
    if (charged < 0)
        return NULL;
    if (charged == 0)
        goto python;
    return send_out(reader, SLOT(channel, channel_layout, C_SINK), SLOT(channel, channel_layout, C_PEER),
                    frame + HEAD, size);
python:
    if (PyErr_Occurred())
        return NULL;
    return fall_back(reader, frame, length);
}

static PyMethodDef methods[] = {
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL,
     "configure(Allocation, Channel, ConnectedSink)\n\n"
     "The classes whose objects the compiled path takes in its common case."},
    {"peer_readable", peer_readable, METH_O,
     "peer_readable(reader)\n\n"
     "TurnIO._on_connected_peer_readable for the reader's socket: a channel's datagram from its peer\n"
     "relayed here, any other through reader.fallback(data, reader.arg)."},
    {"client_readable", client_readable, METH_O,
     "client_readable(reader)\n\n"
     "TurnIO._on_connected_client_readable for the reader's socket: a client's ChannelData relayed here,\n"
     "any other datagram through reader.fallback(data, reader.arg)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "appliance.turn._relay",
    "TURN's relay for connected UDP sockets in C (appliance/turn/relay.py is its Python side).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__relay(void)
{
    if (PyType_Ready(&ReaderType) < 0)
        return NULL;
    sendto_name = PyUnicode_InternFromString("sendto");
    send_errors_name = PyUnicode_InternFromString("send_errors");
    if (sendto_name == NULL || send_errors_name == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Reader", (PyObject *)&ReaderType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
