/* The SFU's fan-out in one compiled call (issue 17): one publisher packet out on every leg of a stream.
 *
 * For each leg in the common case (its payload type mapped, not rebasing, no VP8 renumbering, no padding
 * trial, sending through the media port to a session with a compiled-path target) this does what
 * Leg.forward and Leg._send do in Python (forward.py): the leg's header and extension block (the
 * elements built once per ext_key, plus the session's transport-wide number), the transport-wide
 * bookkeeping (TransportSender.seq and what `carried` and the estimator's `sent` record), the leg's
 * counters, and MediaPort.send_rtp's queueing on the listener's pending batch. Any other leg goes
 * through Leg.forward itself, so both paths leave the same state and the same bytes.
 *
 * The state stays in the Python objects, whose slots are read and written here directly: `configure`
 * takes the classes once and finds each slot's offset from its member descriptor (an exact type match
 * is checked per object, so a subclass or another kind of object takes the Python path). The
 * transport-wide arrays are reached through a Ring, which holds their buffers (so they cannot be
 * resized) for each TransportSender. The GIL stays held throughout.
 *
 * transport_cc, below the Ring, is the other per-packet loop in C: the estimator's walk of each packet a
 * subscriber's transport-cc feedback reports (issue 17). rtp and receive, at the end, are the receive
 * side: CallSession.rtp and PublishedTrack.receive, the fan-out called from there; transport_report is
 * the feedback the receive side sends its publisher (TransportReceiver.report).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "../_slots.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* The slots read or written, by class; the order of each list is its enum's. */
enum { L_PT_MAP, L_REBASE, L_PICTURES, L_PADDING, L_SEND, L_SUBSCRIBER, L_BASE_SEQ, L_SEQ_DELTA, L_TS_DELTA,
       L_LAST_SEQ, L_LAST_TS, L_SENT_PACKET, L_PACKETS, L_OCTETS, L_SSRC, L_EXT_KEY, L_EXT_MAP, L_COUNT };
static const char *const leg_names[L_COUNT] = {
    "pt_map", "rebase", "pictures", "padding", "send", "subscriber", "base_seq", "seq_delta", "ts_delta",
    "last_seq", "last_ts", "sent_packet", "packets", "octets", "ssrc", "ext_key", "ext_map"};
enum { S_SRTP_TX, S_LISTENER, S_TX_TARGET, S_COUNT };
static const char *const session_names[S_COUNT] = {"srtp_tx", "listener", "tx_target"};
enum { P_PENDING, P_COUNT };
static const char *const listener_names[P_COUNT] = {"pending"};
enum { T_ELEMENT, T_SEQ, T_LEGS, T_RING, T_COUNT };
static const char *const transport_names[T_COUNT] = {"element", "seq", "_legs", "ring"};

static layout_t leg_layout, session_layout, listener_layout, transport_layout;
static PyObject *send_rtp;  /* MediaPort.send_rtp, the function a leg's bound `send` must be */
static PyObject *body;      /* extensions.body(found, mapping) */
static PyObject *port_session_name, *transport_out_name, *forward_name, *queue_name;

/* Set a slot to a new int; -1 with an exception if it cannot be made. */
static inline int
slot_set_long(PyObject *object, const layout_t *layout, int index, long long value)
{
    PyObject *number = PyLong_FromLongLong(value);
    if (number == NULL)
        return -1;
    slot_set(object, layout, index, number);
    return 0;
}

/* ---- Ring: a TransportSender's arrays, as the compiled path writes them ---------------------------- */

enum { R_OUT_SEQS, R_RESENDS, R_SEQS, R_SENT_AT, R_SIZES, R_STATES, R_COUNT };
static const char *const ring_formats[R_COUNT] = {"H", "B", "i", "d", "I", "B"};

typedef struct {
    PyObject_HEAD
    Py_buffer views[R_COUNT];
    int held;           /* views[0..held) are held */
    Py_ssize_t mask;    /* slots - 1 */
} RingObject;

static void
ring_dealloc(RingObject *self)
{
    for (int i = 0; i < self->held; i++)
        PyBuffer_Release(&self->views[i]);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
ring_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *arrays[R_COUNT];
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "Ring takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_UnpackTuple(args, "Ring", R_COUNT, R_COUNT, &arrays[0], &arrays[1], &arrays[2], &arrays[3],
                           &arrays[4], &arrays[5]))
        return NULL;
    RingObject *self = (RingObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    Py_ssize_t slots = -1;
    for (int i = 0; i < R_COUNT; i++) {
        Py_buffer *view = &self->views[i];
        if (PyObject_GetBuffer(arrays[i], view, PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0)
            goto fail;
        self->held++;
        const char *format = view->format != NULL ? view->format : "B";
        if (format[0] == '@' || format[0] == '=')
            format++;
        Py_ssize_t count = view->itemsize > 0 ? view->len / view->itemsize : 0;
        if (strcmp(format, ring_formats[i]) != 0 || count < 1 || (count & (count - 1)) != 0
                || (slots >= 0 && count != slots)) {
            PyErr_Format(PyExc_ValueError, "Ring: array %d is not %s of the same power-of-two length", i,
                         ring_formats[i]);
            goto fail;
        }
        slots = count;
    }
    self->mask = slots - 1;
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

static PyTypeObject RingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "appliance.sfu._fanout.Ring",
    .tp_basicsize = sizeof(RingObject),
    .tp_dealloc = (destructor)ring_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Ring(out_seqs, resends, seqs, sent_at, sizes, states): a TransportSender's ring arrays\n"
              "(array('H'), bytearray, array('i'), array('d'), array('I'), bytearray, all one power-of-two\n"
              "length), held for the compiled fan-out to write.",
    .tp_new = ring_new,
};

/* ---- transport-cc feedback: the estimator's per-packet work in one call per report --------------------
 *
 * transport_cc(ring, packet, at, end, estimator) does what feedback._transport_feedback, the loop of
 * SendSideEstimator.feedback (bwe.py) up to the groups' deltas, and TransportSender.lost's test of which
 * packets the ring still holds do, for the FCI in packet[at:end]. The state stays in the estimator's
 * objects (their attributes read once and written back once) and the ring's arrays. It returns None for a
 * malformed FCI (nothing touched), NotImplemented where a value would not fit the C integers (nothing
 * touched: the Python path takes it), else (lost, reported, last_arrival_ms, [(deltas, arrival_ms), ...],
 * [lost seq, ...]) for the Python that stays per report. */

#define ACKED_WINDOW_MS 1000
#define TIMESTAMP_UNITS 67108864.0      /* 1 << aiortc's INTER_ARRIVAL_SHIFT (26) */
#define TIMESTAMP_TO_MS (1000.0 / TIMESTAMP_UNITS)
#define GROUP_LENGTH ((5LL << 26) / 1000)
#define BURST_DELTA_MS 5
#define FITS(x) (fabs(x) < 4.0e18)      /* NaN fails too */

static PyObject *unwrap_name, *groups_name, *acked_name, *last_arrival_name, *first_name, *last_name,
    *arrival_name, *size_name, *previous_name, *counts_name, *values_name, *origin_index_name,
    *origin_ms_name, *count_name, *value_name;

typedef struct {
    int has_first;
    long long first, last, arrival, size;
    int has_previous;
    long long previous[3];
} groups_t;

typedef struct {
    long long *counts, *values;
    long long origin_index, count, value;
    int has_origin;
    long long origin_ms;
} acked_t;

static inline long long
py_mod(long long a, long long m)
{
    long long r = a % m;
    return r < 0 ? r + m : r;
}

/* An int attribute, or None (*present = 0) where `present` is given. -1 with an exception when it is
 * neither or does not fit. */
static int
get_ll(PyObject *object, PyObject *name, long long *out, int *present)
{
    PyObject *value = PyObject_GetAttr(object, name);
    if (value == NULL)
        return -1;
    if (present != NULL) {
        *present = value != Py_None;
        if (value == Py_None) {
            Py_DECREF(value);
            return 0;
        }
    }
    *out = PyLong_AsLongLong(value);
    Py_DECREF(value);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

static int
set_ll(PyObject *object, PyObject *name, long long value, int present)
{
    PyObject *v = present ? PyLong_FromLongLong(value) : Py_NewRef(Py_None);
    if (v == NULL)
        return -1;
    int rc = PyObject_SetAttr(object, name, v);
    Py_DECREF(v);
    return rc;
}

static void
acked_reset(acked_t *a)
{
    memset(a->counts, 0, ACKED_WINDOW_MS * sizeof(long long));
    memset(a->values, 0, ACKED_WINDOW_MS * sizeof(long long));
    a->origin_index = 0;
    a->has_origin = 0;
    a->count = a->value = 0;
}

static void
acked_erase_old(acked_t *a, long long now_ms)
{
    long long start = now_ms - ACKED_WINDOW_MS + 1;
    if (!a->has_origin || a->origin_ms >= start)
        return;
    long long steps = start - a->origin_ms;
    if (steps >= ACKED_WINDOW_MS) {
        memset(a->counts, 0, ACKED_WINDOW_MS * sizeof(long long));
        memset(a->values, 0, ACKED_WINDOW_MS * sizeof(long long));
        a->count = a->value = 0;
    }
    else {
        long long index = a->origin_index;
        for (long long i = 0; i < steps; i++) {
            a->count -= a->counts[index];
            a->value -= a->values[index];
            a->counts[index] = a->values[index] = 0;
            index = (index + 1) % ACKED_WINDOW_MS;
        }
    }
    a->origin_index = py_mod(a->origin_index + steps, ACKED_WINDOW_MS);
    a->origin_ms = start;
}

static void
acked_add(acked_t *a, long long value, long long now_ms)
{
    long long origin = a->origin_ms;
    if (!a->has_origin) {
        a->has_origin = 1;
        a->origin_ms = origin = now_ms;
    }
    else if (origin == now_ms - ACKED_WINDOW_MS) {
        long long index = a->origin_index;
        a->count += 1 - a->counts[index];
        a->value += value - a->values[index];
        a->counts[index] = 1;
        a->values[index] = value;
        a->origin_index = (index + 1) % ACKED_WINDOW_MS;
        a->origin_ms = origin + 1;
        return;
    }
    else if (origin < now_ms - ACKED_WINDOW_MS) {
        acked_erase_old(a, now_ms);
        origin = now_ms - ACKED_WINDOW_MS + 1;
    }
    long long index = py_mod(a->origin_index + now_ms - origin, ACKED_WINDOW_MS);
    a->counts[index] += 1;
    a->values[index] += value;
    a->count += 1;
    a->value += value;
}

/* _Groups.add: 1 with `deltas` set when `timestamp` starts a new group after two complete ones. */
static int
groups_add(groups_t *g, long long timestamp, long long arrival, long long size, long long deltas[3])
{
    int out = 0;
    if (!g->has_first) {
        g->has_first = 1;
        g->first = g->last = timestamp;
    }
    else if (((timestamp - g->first) & 0xFFFFFFFFLL) >= 0x80000000LL)
        return 0;
    else {
        long long last = g->last;
        long long sent_ms = (long long)nearbyint(TIMESTAMP_TO_MS * (double)((timestamp - last) & 0xFFFFFFFFLL));
        long long gap = arrival - g->arrival;
        int burst = sent_ms == 0 || (gap - sent_ms < 0 && gap <= BURST_DELTA_MS);
        if (!burst && ((timestamp - g->first) & 0xFFFFFFFFLL) > GROUP_LENGTH) {
            if (g->has_previous) {
                deltas[0] = (last - g->previous[0]) & 0xFFFFFFFFLL;
                deltas[1] = g->arrival - g->previous[1];
                deltas[2] = g->size - g->previous[2];
                out = 1;
            }
            g->has_previous = 1;
            g->previous[0] = last;
            g->previous[1] = g->arrival;
            g->previous[2] = g->size;
            g->first = g->last = timestamp;
            g->size = 0;
        }
        else if ((last < timestamp && timestamp - last < 0x80000000LL)
                 || (last > timestamp && last - timestamp > 0x80000000LL))
            g->last = timestamp;
    }
    g->size += size;
    g->arrival = arrival;
    return out;
}

static int
read_groups(PyObject *groups, groups_t *g)
{
    if (get_ll(groups, first_name, &g->first, &g->has_first) < 0 || get_ll(groups, last_name, &g->last, NULL) < 0
            || get_ll(groups, arrival_name, &g->arrival, NULL) < 0 || get_ll(groups, size_name, &g->size, NULL) < 0)
        return -1;
    PyObject *previous = PyObject_GetAttr(groups, previous_name);
    if (previous == NULL)
        return -1;
    g->has_previous = previous != Py_None;
    int rc = 0;
    if (g->has_previous) {
        if (!PyTuple_Check(previous) || PyTuple_GET_SIZE(previous) != 3) {
            PyErr_SetString(PyExc_TypeError, "_Groups.previous is not a 3-tuple");
            rc = -1;
        }
        for (int i = 0; rc == 0 && i < 3; i++) {
            g->previous[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(previous, i));
            if (g->previous[i] == -1 && PyErr_Occurred())
                rc = -1;
        }
    }
    Py_DECREF(previous);
    return rc;
}

static int
write_groups(PyObject *groups, const groups_t *g)
{
    if (set_ll(groups, first_name, g->first, g->has_first) < 0 || set_ll(groups, last_name, g->last, 1) < 0
            || set_ll(groups, arrival_name, g->arrival, 1) < 0 || set_ll(groups, size_name, g->size, 1) < 0)
        return -1;
    PyObject *previous = g->has_previous
        ? Py_BuildValue("(LLL)", g->previous[0], g->previous[1], g->previous[2]) : Py_NewRef(Py_None);
    if (previous == NULL)
        return -1;
    int rc = PyObject_SetAttr(groups, previous_name, previous);
    Py_DECREF(previous);
    return rc;
}

static int
acked_buffer(PyObject *acked, PyObject *name, Py_buffer *view)
{
    PyObject *array = PyObject_GetAttr(acked, name);
    if (array == NULL)
        return -1;
    int rc = PyObject_GetBuffer(array, view, PyBUF_WRITABLE | PyBUF_FORMAT | PyBUF_C_CONTIGUOUS);
    Py_DECREF(array);
    if (rc < 0)
        return -1;
    if (view->itemsize != sizeof(long long) || view->len != ACKED_WINDOW_MS * (Py_ssize_t)sizeof(long long)
            || view->format == NULL || strcmp(view->format, "q") != 0) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_TypeError, "_AckedRate's buckets are not array('q') of the window's length");
        return -1;
    }
    return 0;
}

static PyObject *
transport_cc(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !Py_IS_TYPE(args[0], &RingType)) {
        PyErr_SetString(PyExc_TypeError, "transport_cc(ring, packet, at, end, estimator)");
        return NULL;
    }
    RingObject *ring = (RingObject *)args[0];
    PyObject *estimator = args[4];
    Py_ssize_t at = PyLong_AsSsize_t(args[2]), end = PyLong_AsSsize_t(args[3]);
    if ((at == -1 || end == -1) && PyErr_Occurred())
        return NULL;
    Py_buffer packet_view;
    if (PyObject_GetBuffer(args[1], &packet_view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *p = packet_view.buf;
    if (at < 0 || end > packet_view.len || at > end) {
        PyBuffer_Release(&packet_view);
        PyErr_SetString(PyExc_ValueError, "transport_cc: the span is not within the packet");
        return NULL;
    }
    PyObject *result = NULL, *detections = NULL, *lost_seqs = NULL, *offset_obj = NULL, *groups = NULL,
        *acked = NULL;
    unsigned char *symbols = NULL;
    long long *ticks_at = NULL;
    Py_buffer counts_view = {0}, values_view = {0};
    int counts_held = 0, values_held = 0;

    /* The parse, as _transport_feedback: every malformed case before anything is touched. */
    if (end < at + 12) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    unsigned base_seq = (unsigned)p[at + 4] << 8 | p[at + 5];
    Py_ssize_t count = (Py_ssize_t)p[at + 6] << 8 | p[at + 7];
    long long reference = (long long)p[at + 8] << 16 | (long long)p[at + 9] << 8 | p[at + 10];
    reference -= (reference & 0x800000) << 1;
    Py_ssize_t pos = at + 12;
    symbols = PyMem_Malloc(count > 0 ? (size_t)count : 1);
    ticks_at = PyMem_Malloc((count > 0 ? (size_t)count : 1) * sizeof(long long));
    if (symbols == NULL || ticks_at == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t n = 0;
    while (n < count) {
        if (pos + 2 > end) {
            result = Py_NewRef(Py_None);
            goto done;
        }
        unsigned chunk = (unsigned)p[pos] << 8 | p[pos + 1];
        pos += 2;
        if (!(chunk & 0x8000)) {
            Py_ssize_t run = chunk & 0x1FFF;
            for (Py_ssize_t i = 0; i < run && n < count; i++)
                symbols[n++] = chunk >> 13 & 3;
        }
        else if (chunk & 0x4000) {
            for (int shift = 12; shift >= 0 && n < count; shift -= 2)
                symbols[n++] = chunk >> shift & 3;
        }
        else {
            for (int shift = 13; shift >= 0 && n < count; shift--)
                symbols[n++] = chunk >> shift & 1;
        }
    }
    for (Py_ssize_t i = 0; i < count; i++)
        if (symbols[i] == 3) {
            result = Py_NewRef(Py_None);
            goto done;
        }
    long long ticks = reference * 256;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (symbols[i] == 1) {
            if (pos >= end) {
                result = Py_NewRef(Py_None);
                goto done;
            }
            ticks += p[pos++];
        }
        else if (symbols[i] == 2) {
            if (pos + 2 > end) {
                result = Py_NewRef(Py_None);
                goto done;
            }
            ticks += (int16_t)((uint16_t)p[pos] << 8 | p[pos + 1]);
            pos += 2;
        }
        ticks_at[i] = ticks;
    }

    const int32_t *seqs = ring->views[R_SEQS].buf;
    const double *sent_at = ring->views[R_SENT_AT].buf;
    const uint32_t *sizes = ring->views[R_SIZES].buf;
    unsigned char *states = ring->views[R_STATES].buf;
    Py_ssize_t mask = ring->mask;
    for (Py_ssize_t i = 0; i < count; i++) {  /* what would take Python's big ints goes the Python way */
        unsigned seq = (base_seq + (unsigned)i) & 0xFFFF;
        if (symbols[i] != 0 && seqs[seq & mask] == (int32_t)seq && !FITS(sent_at[seq & mask] * TIMESTAMP_UNITS)) {
            result = Py_NewRef(Py_NotImplemented);
            goto done;
        }
    }
    PyObject *last_obj = PyObject_GetAttr(estimator, last_arrival_name);
    if (last_obj == NULL)
        goto done;
    int has_last = last_obj != Py_None;
    double last_arrival_ms = has_last ? PyFloat_AsDouble(last_obj) : 0.0;
    Py_DECREF(last_obj);
    if (has_last && last_arrival_ms == -1.0 && PyErr_Occurred())
        goto done;
    groups_t g = {0};
    acked_t a = {0};
    if ((groups = PyObject_GetAttr(estimator, groups_name)) == NULL || read_groups(groups, &g) < 0
            || (acked = PyObject_GetAttr(estimator, acked_name)) == NULL)
        goto done;
    if (acked_buffer(acked, counts_name, &counts_view) < 0)
        goto done;
    counts_held = 1;
    if (acked_buffer(acked, values_name, &values_view) < 0)
        goto done;
    values_held = 1;
    a.counts = counts_view.buf;
    a.values = values_view.buf;
    if (get_ll(acked, origin_index_name, &a.origin_index, NULL) < 0
            || get_ll(acked, origin_ms_name, &a.origin_ms, &a.has_origin) < 0
            || get_ll(acked, count_name, &a.count, NULL) < 0 || get_ll(acked, value_name, &a.value, NULL) < 0)
        goto done;

    PyObject *reference_time = PyFloat_FromDouble((double)reference * 0.064);
    if (reference_time == NULL)
        goto done;
    offset_obj = PyObject_CallMethodOneArg(estimator, unwrap_name, reference_time);
    Py_DECREF(reference_time);
    if (offset_obj == NULL)
        goto done;
    double offset = PyFloat_AsDouble(offset_obj);
    if (offset == -1.0 && PyErr_Occurred())
        goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (symbols[i] == 0)
            continue;
        double arrival_ms = ((double)ticks_at[i] / 4000.0 + offset) * 1000.0;
        if (!FITS(arrival_ms)) {  /* beyond any clock: after _unwrap, so not exactly the Python path's */
            PyErr_SetString(PyExc_OverflowError, "transport_cc: an arrival time out of range");
            goto done;
        }
    }

    /* The estimator's loop. */
    if ((detections = PyList_New(0)) == NULL || (lost_seqs = PyList_New(0)) == NULL)
        goto done;
    long long lost = 0, reported = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        unsigned seq = (base_seq + (unsigned)i) & 0xFFFF;
        Py_ssize_t slot = seq & mask;
        if (seqs[slot] != (int32_t)seq)
            continue;
        unsigned char state = states[slot];
        if (symbols[i] == 0) {
            PyObject *s = PyLong_FromLong((long)seq);
            if (s == NULL || PyList_Append(lost_seqs, s) < 0) {
                Py_XDECREF(s);
                goto done;
            }
            Py_DECREF(s);
            if (state == 0) {
                states[slot] = 1;
                lost++;
                reported++;
            }
            continue;
        }
        if (state == 2)
            continue;
        if (state == 1)
            lost--;
        else
            reported++;
        states[slot] = 2;
        double arrival_ms = ((double)ticks_at[i] / 4000.0 + offset) * 1000.0;
        if (has_last && arrival_ms - last_arrival_ms > ACKED_WINDOW_MS)
            acked_reset(&a);
        last_arrival_ms = arrival_ms;
        has_last = 1;
        long long whole_ms = (long long)arrival_ms;
        long long size = sizes[slot];
        acked_add(&a, size, whole_ms);
        long long timestamp = (long long)(sent_at[slot] * TIMESTAMP_UNITS) & 0xFFFFFFFFLL;
        long long deltas[3];
        if (groups_add(&g, timestamp, whole_ms, size, deltas)) {
            PyObject *d = Py_BuildValue("((LLL)L)", deltas[0], deltas[1], deltas[2], whole_ms);
            if (d == NULL || PyList_Append(detections, d) < 0) {
                Py_XDECREF(d);
                goto done;
            }
            Py_DECREF(d);
        }
    }
    if (write_groups(groups, &g) < 0 || set_ll(acked, origin_index_name, a.origin_index, 1) < 0
            || set_ll(acked, origin_ms_name, a.origin_ms, a.has_origin) < 0
            || set_ll(acked, count_name, a.count, 1) < 0 || set_ll(acked, value_name, a.value, 1) < 0)
        goto done;
    PyObject *last = has_last ? PyFloat_FromDouble(last_arrival_ms) : Py_NewRef(Py_None);
    if (last == NULL)
        goto done;
    result = Py_BuildValue("(LLNOO)", lost, reported, last, detections, lost_seqs);
done:
    if (counts_held)
        PyBuffer_Release(&counts_view);
    if (values_held)
        PyBuffer_Release(&values_view);
    PyBuffer_Release(&packet_view);
    PyMem_Free(symbols);
    PyMem_Free(ticks_at);
    Py_XDECREF(detections);
    Py_XDECREF(lost_seqs);
    Py_XDECREF(offset_obj);
    Py_XDECREF(groups);
    Py_XDECREF(acked);
    return result;
}

/* ---- the fan-out --------------------------------------------------------------------------------- */

static PyObject *
configure(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *leg, *session, *listener, *transport, *send, *body_function;
    if (!PyArg_UnpackTuple(args, "configure", 6, 6, &leg, &session, &listener, &transport, &send, &body_function))
        return NULL;
    if (find_layout(leg, leg_names, L_COUNT, &leg_layout) < 0
            || find_layout(session, session_names, S_COUNT, &session_layout) < 0
            || find_layout(listener, listener_names, P_COUNT, &listener_layout) < 0
            || find_layout(transport, transport_names, T_COUNT, &transport_layout) < 0)
        return NULL;
    Py_XSETREF(send_rtp, Py_NewRef(send));
    Py_XSETREF(body, Py_NewRef(body_function));
    Py_RETURN_NONE;
}

/* An exact int's value, or -1 (no exception) for anything else: the caller takes the Python path. */
static inline long long
small_int(PyObject *value)
{
    if (!PyLong_CheckExact(value))
        return -1;
    int overflow;
    long long out = PyLong_AsLongLongAndOverflow(value, &overflow);
    return overflow || out < 0 ? -1 : out;
}

/* What a common-case leg needs, read before anything is written. */
typedef struct {
    long pt;
    long long base_seq, seq_delta, ts_delta, last_seq, packets, octets, ssrc;
    PyObject *port;         /* borrowed: the bound send's MediaPort */
    PyObject *port_session; /* new references, released by release_plan */
    PyObject *transport;    /* NULL without transport-wide numbering */
} plan_t;

static void
release_plan(plan_t *plan)
{
    Py_CLEAR(plan->port_session);
    Py_CLEAR(plan->transport);
}

/* 1: the leg is in the common case (plan filled); 0: the Python path; -1: an exception. `*unmapped`:
 * its payload type is not mapped (nothing to send, as in Python). */
static int
read_plan(PyObject *leg, PyObject *in_pt, plan_t *plan, int *unmapped)
{
    *unmapped = 0;
    if (Py_TYPE(leg) != leg_layout.type)
        return 0;
    PyObject *pt_map = SLOT(leg, leg_layout, L_PT_MAP);
    if (pt_map == NULL || !PyDict_CheckExact(pt_map))
        return 0;
    PyObject *pt = PyDict_GetItemWithError(pt_map, in_pt);
    if (pt == NULL) {
        if (PyErr_Occurred())
            return -1;
        *unmapped = 1;
        return 0;
    }
    plan->pt = (long)small_int(pt);
    if (plan->pt < 0 || plan->pt > 0x7F)
        return 0;
    if (SLOT(leg, leg_layout, L_REBASE) != Py_False || SLOT(leg, leg_layout, L_PICTURES) != Py_False)
        return 0;
    PyObject *padding = SLOT(leg, leg_layout, L_PADDING);
    if (padding == NULL || !((PyFloat_CheckExact(padding) && PyFloat_AS_DOUBLE(padding) == 0.0)
                             || (PyLong_CheckExact(padding) && small_int(padding) == 0)))
        return 0;
    PyObject *send = SLOT(leg, leg_layout, L_SEND);
    if (send == NULL || !PyMethod_Check(send) || PyMethod_GET_FUNCTION(send) != send_rtp)
        return 0;
    plan->port = PyMethod_GET_SELF(send);
    PyObject *slots[] = {SLOT(leg, leg_layout, L_BASE_SEQ), SLOT(leg, leg_layout, L_SEQ_DELTA),
                         SLOT(leg, leg_layout, L_TS_DELTA), SLOT(leg, leg_layout, L_LAST_SEQ),
                         SLOT(leg, leg_layout, L_PACKETS), SLOT(leg, leg_layout, L_OCTETS),
                         SLOT(leg, leg_layout, L_SSRC), SLOT(leg, leg_layout, L_LAST_TS),
                         SLOT(leg, leg_layout, L_EXT_KEY), SLOT(leg, leg_layout, L_EXT_MAP),
                         SLOT(leg, leg_layout, L_SUBSCRIBER)};
    for (size_t i = 0; i < sizeof(slots) / sizeof(slots[0]); i++) {
        if (slots[i] == NULL)
            return 0;
    }
    long long *values[] = {&plan->base_seq, &plan->seq_delta, &plan->ts_delta, &plan->last_seq, &plan->packets,
                           &plan->octets, &plan->ssrc};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        if ((*values[i] = small_int(slots[i])) < 0)
            return 0;
    }
    if (plan->base_seq > 0xFFFF || plan->seq_delta > 0xFFFF || plan->ts_delta > 0xFFFFFFFFLL
            || plan->last_seq > 0xFFFF || plan->ssrc > 0xFFFFFFFFLL)
        return 0;
    PyObject *subscriber = SLOT(leg, leg_layout, L_SUBSCRIBER);
    plan->port_session = PyObject_GetAttr(subscriber, port_session_name);
    if (plan->port_session == NULL)
        return -1;
    plan->transport = PyObject_GetAttr(subscriber, transport_out_name);
    if (plan->transport == NULL)
        return -1;
    PyObject *session = plan->port_session;
    if (Py_TYPE(session) != session_layout.type)
        return 0;
    PyObject *srtp = SLOT(session, session_layout, S_SRTP_TX), *listener = SLOT(session, session_layout, S_LISTENER),
             *target = SLOT(session, session_layout, S_TX_TARGET);
    if (srtp == NULL || srtp == Py_None || target == NULL || target == Py_None || listener == NULL
            || Py_TYPE(listener) != listener_layout.type)
        return 0;
    PyObject *pending = SLOT(listener, listener_layout, P_PENDING);
    if (pending == NULL || !PyList_CheckExact(pending))
        return 0;
    if (plan->transport == Py_None) {
        Py_CLEAR(plan->transport);
        return 1;
    }
    PyObject *transport = plan->transport;
    if (Py_TYPE(transport) != transport_layout.type)
        return 0;
    PyObject *element = SLOT(transport, transport_layout, T_ELEMENT), *seq = SLOT(transport, transport_layout, T_SEQ),
             *legs = SLOT(transport, transport_layout, T_LEGS), *ring = SLOT(transport, transport_layout, T_RING);
    if (element == NULL || seq == NULL || legs == NULL || ring == NULL || !Py_IS_TYPE(ring, &RingType)
            || !PyList_CheckExact(legs) || PyList_GET_SIZE(legs) != ((RingObject *)ring)->mask + 1)
        return 0;
    long long element_value = small_int(element), seq_value = small_int(seq);
    if (element_value < 0 || element_value > 0xFF || seq_value < 0 || seq_value > 0xFFFF)
        return 0;
    return 1;
}

/* The extension elements for `leg`'s ext_key: from `bodies`, made on the first use of each key. A borrowed
 * reference (`bodies` holds it), NULL with an exception. */
static PyObject *
leg_elements(PyObject *leg, PyObject *found, PyObject *bodies)
{
    PyObject *key, *mapping; /* new references: from the slots of a Leg, else as attributes */
    if (Py_TYPE(leg) == leg_layout.type && SLOT(leg, leg_layout, L_EXT_KEY) != NULL
            && SLOT(leg, leg_layout, L_EXT_MAP) != NULL) {
        key = Py_NewRef(SLOT(leg, leg_layout, L_EXT_KEY));
        mapping = Py_NewRef(SLOT(leg, leg_layout, L_EXT_MAP));
    } else {
        key = PyObject_GetAttrString(leg, "ext_key");
        mapping = key != NULL ? PyObject_GetAttrString(leg, "ext_map") : NULL;
        if (mapping == NULL) {
            Py_XDECREF(key);
            return NULL;
        }
    }
    PyObject *elements = PyDict_GetItemWithError(bodies, key);
    if (elements == NULL && !PyErr_Occurred()) {
        PyObject *made = PyObject_CallFunctionObjArgs(body, found, mapping, NULL);
        if (made != NULL && (!PyBytes_Check(made) || PyDict_SetItem(bodies, key, made) < 0)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "extensions.body returned something other than bytes");
        } else {
            elements = made; /* `bodies` holds it */
        }
        Py_XDECREF(made);
    }
    Py_DECREF(key);
    Py_DECREF(mapping);
    return elements;
}

/* Send one packet on a common-case leg: 0, or -1 with an exception. */
static int
forward_leg(PyObject *leg, const plan_t *plan, PyObject *packet, const unsigned char *head, const char *payload,
            Py_ssize_t payload_length, long long seq, long long ts, PyObject *elements, double now)
{
    long long behind = (seq - plan->base_seq) & 0xFFFF;
    if (behind >= 0x8000)
        return 0; /* from before this source started on the leg: its numbers are taken */
    if (behind > 0x4000 && slot_set_long(leg, &leg_layout, L_BASE_SEQ, (seq - 0x2000) & 0xFFFF) < 0)
        return -1;
    long long out_seq = (seq + plan->seq_delta) & 0xFFFF, out_ts = (ts + plan->ts_delta) & 0xFFFFFFFFLL;
    if (((out_seq - plan->last_seq) & 0xFFFF) < 0x8000) {
        if (slot_set_long(leg, &leg_layout, L_LAST_SEQ, out_seq) < 0
                || slot_set_long(leg, &leg_layout, L_LAST_TS, out_ts) < 0)
            return -1;
        slot_set(leg, &leg_layout, L_SENT_PACKET, Py_NewRef(packet));
    }
    if (slot_set_long(leg, &leg_layout, L_PACKETS, plan->packets + 1) < 0
            || slot_set_long(leg, &leg_layout, L_OCTETS, plan->octets + payload_length) < 0)
        return -1;

    PyObject *transport = plan->transport;
    long long transport_seq = 0;
    Py_ssize_t element_length = PyBytes_GET_SIZE(elements);
    Py_ssize_t total_elements = element_length + (transport != NULL ? 3 : 0);
    Py_ssize_t words = (total_elements + 3) / 4;
    Py_ssize_t header = 12 + (total_elements ? 4 + 4 * words : 0);
    PyObject *data = PyBytes_FromStringAndSize(NULL, header + payload_length);
    if (data == NULL)
        return -1;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(data);
    out[0] = (unsigned char)(0x80 | (head[0] & 0x20) | (total_elements ? 0x10 : 0));
    out[1] = (unsigned char)((head[1] & 0x80) | plan->pt);
    out[2] = (unsigned char)(out_seq >> 8);
    out[3] = (unsigned char)out_seq;
    out[4] = (unsigned char)(out_ts >> 24);
    out[5] = (unsigned char)(out_ts >> 16);
    out[6] = (unsigned char)(out_ts >> 8);
    out[7] = (unsigned char)out_ts;
    out[8] = (unsigned char)(plan->ssrc >> 24);
    out[9] = (unsigned char)(plan->ssrc >> 16);
    out[10] = (unsigned char)(plan->ssrc >> 8);
    out[11] = (unsigned char)plan->ssrc;
    if (total_elements) {
        unsigned char *block = out + 12;
        block[0] = 0xBE;
        block[1] = 0xDE;
        block[2] = (unsigned char)(words >> 8);
        block[3] = (unsigned char)words;
        memcpy(block + 4, PyBytes_AS_STRING(elements), (size_t)element_length);
        unsigned char *at = block + 4 + element_length;
        if (transport != NULL) {
            transport_seq = (small_int(SLOT(transport, transport_layout, T_SEQ)) + 1) & 0xFFFF;
            at[0] = (unsigned char)small_int(SLOT(transport, transport_layout, T_ELEMENT));
            at[1] = (unsigned char)(transport_seq >> 8);
            at[2] = (unsigned char)transport_seq;
            at += 3;
        }
        memset(at, 0, (size_t)(4 * words - total_elements));
    }
    memcpy(out + header, payload, (size_t)payload_length);
    if (transport != NULL && slot_set_long(transport, &transport_layout, T_SEQ, transport_seq) < 0) {
        Py_DECREF(data);
        return -1;
    }

    /* MediaPort.send_rtp on a batched listener: the listener queued once, then the item appended. */
    PyObject *session = plan->port_session;
    PyObject *listener = SLOT(session, session_layout, S_LISTENER);
    PyObject *pending = SLOT(listener, listener_layout, P_PENDING);
    if (PyList_GET_SIZE(pending) == 0) {
        PyObject *result = PyObject_CallMethodOneArg(plan->port, queue_name, listener);
        if (result == NULL) {
            Py_DECREF(data);
            return -1;
        }
        Py_DECREF(result);
        pending = SLOT(listener, listener_layout, P_PENDING); /* still the same list: `_queue` only notes it */
        if (pending == NULL || !PyList_CheckExact(pending)) {
            Py_DECREF(data);
            PyErr_SetString(PyExc_TypeError, "a listener's pending is not a list");
            return -1;
        }
    }
    PyObject *item = PyTuple_Pack(2, SLOT(session, session_layout, S_TX_TARGET), data);
    Py_ssize_t data_length = PyBytes_GET_SIZE(data);
    Py_DECREF(data);
    if (item == NULL)
        return -1;
    int appended = PyList_Append(pending, item);
    Py_DECREF(item);
    if (appended < 0)
        return -1;

    if (transport != NULL) {
        /* estimator.sent(seq, len(data), now), then carried(leg, out_seq, False); checked again, as
         * `_queue` ran Python code since read_plan */
        RingObject *ring = (RingObject *)SLOT(transport, transport_layout, T_RING);
        PyObject *legs = SLOT(transport, transport_layout, T_LEGS);
        if (ring == NULL || !Py_IS_TYPE(ring, &RingType) || legs == NULL || !PyList_CheckExact(legs)
                || PyList_GET_SIZE(legs) != ring->mask + 1) {
            PyErr_SetString(PyExc_RuntimeError, "a TransportSender's ring changed while it was written");
            return -1;
        }
        Py_ssize_t slot = (Py_ssize_t)transport_seq & ring->mask;
        ((int32_t *)ring->views[R_SEQS].buf)[slot] = (int32_t)transport_seq;
        ((double *)ring->views[R_SENT_AT].buf)[slot] = now;
        ((uint32_t *)ring->views[R_SIZES].buf)[slot] = (uint32_t)data_length;
        ((unsigned char *)ring->views[R_STATES].buf)[slot] = 0;
        PyObject *old = PyList_GET_ITEM(legs, slot);
        PyList_SET_ITEM(legs, slot, Py_NewRef(leg));
        Py_XDECREF(old);
        ((uint16_t *)ring->views[R_OUT_SEQS].buf)[slot] = (uint16_t)out_seq;
        ((unsigned char *)ring->views[R_RESENDS].buf)[slot] = 0;
    }
    return 0;
}

/* The fan-out of `packet`, whose payload is payload_data[0..payload_length): `payload` is that as bytes,
 * or NULL to cut it only where a leg's Python `forward` needs it (the compiled legs copy from the
 * packet). A new reference to None, NULL with an exception. */
static PyObject *
fan_out(PyObject *legs, PyObject *packet, const char *payload_data, Py_ssize_t payload_length, PyObject *payload,
        PyObject *seq_object, PyObject *ts_object, PyObject *found, PyObject *now_object)
{
    if (leg_layout.type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "fanout before configure");
        return NULL;
    }
    long long seq = small_int(seq_object), ts = small_int(ts_object);
    if (seq < 0 || seq > 0xFFFF || ts < 0 || ts > 0xFFFFFFFFLL) {
        PyErr_SetString(PyExc_ValueError, "seq and ts are the packet's (16 and 32 bits)");
        return NULL;
    }
    double now = PyFloat_AsDouble(now_object);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    const unsigned char *head = (const unsigned char *)PyBytes_AS_STRING(packet);
    PyObject *in_pt = PyLong_FromLong(head[1] & 0x7F); /* a cached small int */
    int with_elements = found != Py_None && PyObject_IsTrue(found);
    if (with_elements < 0)
        return NULL;
    PyObject *empty = PyBytes_FromStringAndSize(NULL, 0);
    PyObject *bodies = with_elements ? PyDict_New() : NULL;
    Py_XINCREF(payload);
    if (in_pt == NULL || empty == NULL || (with_elements && bodies == NULL))
        goto fail;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(legs); i++) { /* a leg's Python path may change the list */
        PyObject *leg = Py_NewRef(PyList_GET_ITEM(legs, i));
        plan_t plan = {0};
        int unmapped, common = read_plan(leg, in_pt, &plan, &unmapped);
        PyObject *elements = empty;
        if (common >= 0 && !unmapped && with_elements)
            elements = leg_elements(leg, found, bodies);
        int status = common < 0 || elements == NULL ? -1 : 0;
        if (status == 0 && common == 1) {
            status = forward_leg(leg, &plan, packet, head, payload_data, payload_length, seq, ts, elements, now);
        } else if (status == 0 && !unmapped) {
            if (payload == NULL)
                payload = PyBytes_FromStringAndSize(payload_data, payload_length);
            PyObject *result = NULL;
            if (payload != NULL) {
                PyObject *call[] = {leg, packet, payload, seq_object, ts_object, elements, now_object};
                result = PyObject_VectorcallMethod(forward_name, call, 7 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
            }
            status = result == NULL ? -1 : 0;
            Py_XDECREF(result);
        }
        release_plan(&plan);
        Py_DECREF(leg);
        if (status < 0)
            goto fail;
    }
    Py_DECREF(in_pt);
    Py_DECREF(empty);
    Py_XDECREF(bodies);
    Py_XDECREF(payload);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(in_pt);
    Py_XDECREF(empty);
    Py_XDECREF(bodies);
    Py_XDECREF(payload);
    return NULL;
}

static PyObject *
fanout(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "fanout(legs, packet, payload, seq, ts, found, now) takes 7 arguments");
        return NULL;
    }
    PyObject *legs = args[0], *packet = args[1], *payload = args[2];
    if (!PyList_Check(legs) || !PyBytes_Check(packet) || PyBytes_GET_SIZE(packet) < 12 || !PyBytes_Check(payload)) {
        PyErr_SetString(PyExc_TypeError, "fanout takes a list of legs, an RTP packet and its payload as bytes");
        return NULL;
    }
    return fan_out(legs, packet, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload), payload, args[3], args[4],
                   args[5], args[6]);
}

/* ---- the receive path: what CallSession.rtp and PublishedTrack.receive do per packet ------------------
 *
 * rtp(session, packet, now) is CallSession.rtp: the transport-wide arrival (TransportReceiver.arrived),
 * the stream by SSRC (else session._unbound), then the stream's track's receive. receive(track, stream,
 * packet, now) is PublishedTrack.receive: in the common case (the next sequence number or no loss
 * tracking, nothing missing, no leg waiting for a keyframe) the stream's records here and the fan-out
 * called in C; any other packet through track.receive_in_python, before anything is touched. Objects of
 * other types than the configured ones take the Python path too (a subclass may override what is
 * done here). */

enum { ST_TRACK, ST_STATS, ST_CACHE, ST_LOSSES, ST_LEGS, ST_WAITING, ST_OCTETS, ST_LAST_PACKET, ST_COUNT };
static const char *const stream_names[ST_COUNT] = {"track", "stats", "cache", "losses", "legs", "waiting", "octets",
                                                   "last_packet"};
enum { LT_HIGHEST, LT_MISSING, LT_COUNT };
static const char *const losses_names[LT_COUNT] = {"highest", "missing"};
enum { C_MASK, C_SEQS, C_PACKETS, C_TIMES, C_COUNT };
static const char *const cache_names[C_COUNT] = {"mask", "seqs", "packets", "times"};
enum { RS_CLOCK_RATE, RS_MAX_SEQ, RS_CYCLES, RS_BASE_SEQ, RS_RECEIVED, RS_JITTER, RS_TRANSIT, RS_COUNT };
static const char *const stats_names[RS_COUNT] = {"clock_rate", "max_seq", "cycles", "base_seq", "received", "jitter",
                                                  "transit"};
enum { TR_EXT_ID, TR_ARRIVALS, TR_NEXT_SEQ, TR_HIGHEST, TR_FEEDBACK_COUNT, TR_COUNT };
static const char *const receiver_names[TR_COUNT] = {"ext_id", "arrivals", "next_seq", "highest", "count"};

static layout_t stream_layout, losses_layout, cache_layout, stats_layout, receiver_layout;
static PyTypeObject *track_type; /* PublishedTrack: a dataclass without slots, its attributes read by name */
static PyObject *reads_extensions_name, *level_id_name, *audio_level_name, *receive_in_python_name,
    *receive_name, *transport_in_name, *by_ssrc_name, *rtp_in_python_name, *unbound_name;

#define PACKET_OVERHEAD 38  /* streams.PACKET_OVERHEAD */
#define BOUND (1LL << 62)   /* the magnitude of ints the C arithmetic here takes */

/* An exact int within +-BOUND: 1 with *out; 0 (no exception) for anything else. */
static inline int
signed_int(PyObject *value, long long *out)
{
    if (value == NULL || !PyLong_CheckExact(value))
        return 0;
    int overflow;
    long long x = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow || x > BOUND || x < -BOUND)
        return 0;
    *out = x;
    return 1;
}

static PyObject *
configure_receive(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *track, *stream, *losses, *cache, *stats, *receiver;
    if (!PyArg_UnpackTuple(args, "configure_receive", 6, 6, &track, &stream, &losses, &cache, &stats, &receiver))
        return NULL;
    if (!PyType_Check(track)) {
        PyErr_SetString(PyExc_TypeError, "configure_receive takes classes");
        return NULL;
    }
    if (find_layout(stream, stream_names, ST_COUNT, &stream_layout) < 0
            || find_layout(losses, losses_names, LT_COUNT, &losses_layout) < 0
            || find_layout(cache, cache_names, C_COUNT, &cache_layout) < 0
            || find_layout(stats, stats_names, RS_COUNT, &stats_layout) < 0
            || find_layout(receiver, receiver_names, TR_COUNT, &receiver_layout) < 0)
        return NULL;
    Py_XSETREF(track_type, (PyTypeObject *)Py_NewRef(track));
    Py_RETURN_NONE;
}

/* forward.payload_offset: where the payload starts, -1 for a packet too short. */
static Py_ssize_t
payload_offset(const unsigned char *p, Py_ssize_t length)
{
    Py_ssize_t offset = 12 + 4 * (p[0] & 0x0F);
    if (p[0] & 0x10) {
        if (length < offset + 4)
            return -1;
        offset += 4 + 4 * (p[offset + 2] << 8 | p[offset + 3]);
    }
    return offset <= length ? offset : -1;
}

/* Where extensions.find and elements start walking: the one-byte block's elements in p[*at:*end]; 0
 * without such a block. */
static int
one_byte_block(const unsigned char *p, Py_ssize_t length, Py_ssize_t *at, Py_ssize_t *end)
{
    Py_ssize_t offset = 12 + 4 * (p[0] & 0x0F);
    if (!(p[0] & 0x10) || length < offset + 4 || p[offset] != 0xBE || p[offset + 1] != 0xDE)
        return 0;
    Py_ssize_t stop = offset + 4 + 4 * (Py_ssize_t)(p[offset + 2] << 8 | p[offset + 3]);
    *at = offset + 4;
    *end = stop < length ? stop : length;
    return 1;
}

/* extensions.find_two: a two-byte element's value, -1 without one. */
static long
find_two(const unsigned char *p, Py_ssize_t length, long ext_id)
{
    if (length > 18 && p[0] == 0x90 && p[16] == (ext_id << 4 | 1) && p[12] == 0xBE && p[13] == 0xDE
            && (p[14] || p[15]))
        return p[17] << 8 | p[18];
    Py_ssize_t i, end;
    if (!one_byte_block(p, length, &i, &end))
        return -1;
    while (i < end) {
        unsigned char head = p[i];
        if (head == 0) {
            i++;
            continue;
        }
        Py_ssize_t size = (head & 0x0F) + 1;
        if (head >> 4 == ext_id)
            return i + 1 + size <= end && size == 2 ? p[i + 1] << 8 | p[i + 2] : -1;
        if (head >> 4 == 15)
            return -1;
        i += 1 + size;
    }
    return -1;
}

/* extensions.elements: the one-byte elements by id, a new dict; None without a block. */
static PyObject *
elements(const unsigned char *p, Py_ssize_t length)
{
    Py_ssize_t i, end;
    if (!one_byte_block(p, length, &i, &end))
        Py_RETURN_NONE;
    PyObject *out = PyDict_New();
    if (out == NULL)
        return NULL;
    while (i < end) {
        unsigned char head = p[i];
        if (head == 0) {
            i++;
            continue;
        }
        Py_ssize_t size = (head & 0x0F) + 1;
        if (head >> 4 == 15 || i + 1 + size > end)
            break;
        PyObject *key = PyLong_FromLong(head >> 4), *data = PyBytes_FromStringAndSize((const char *)p + i + 1, size);
        int rc = key == NULL || data == NULL ? -1 : PyDict_SetItem(out, key, data);
        Py_XDECREF(key);
        Py_XDECREF(data);
        if (rc < 0) {
            Py_DECREF(out);
            return NULL;
        }
        i += 1 + size;
    }
    return out;
}

static inline void
list_set(PyObject *list, Py_ssize_t i, PyObject *value)
{
    PyObject *old = PyList_GET_ITEM(list, i);
    PyList_SET_ITEM(list, i, Py_NewRef(value));
    Py_XDECREF(old);
}

/* PublishedTrack.receive for a track of the configured class: a new reference to None, NULL with an
 * exception. */
static PyObject *
track_receive(PyObject *track, PyObject *stream, PyObject *packet, PyObject *now_object)
{
    if (Py_TYPE(stream) != stream_layout.type || !PyBytes_CheckExact(packet) || PyBytes_GET_SIZE(packet) < 12
            || !PyFloat_CheckExact(now_object))
        goto python;
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(packet);
    Py_ssize_t length = PyBytes_GET_SIZE(packet);
    long seq = p[2] << 8 | p[3];
    long long ts = (long long)p[4] << 24 | p[5] << 16 | p[6] << 8 | p[7];
    double now = PyFloat_AS_DOUBLE(now_object);

    /* Everything that decides the path, read before anything is written. */
    long long octets;
    PyObject *waiting = SLOT(stream, stream_layout, ST_WAITING), *legs = SLOT(stream, stream_layout, ST_LEGS),
             *stats = SLOT(stream, stream_layout, ST_STATS), *losses = SLOT(stream, stream_layout, ST_LOSSES),
             *cache = SLOT(stream, stream_layout, ST_CACHE);
    if (!signed_int(SLOT(stream, stream_layout, ST_OCTETS), &octets) || waiting == NULL
            || !PyList_CheckExact(waiting) || PyList_GET_SIZE(waiting) != 0 || legs == NULL
            || !PyList_CheckExact(legs) || stats == NULL || Py_TYPE(stats) != stats_layout.type || losses == NULL
            || cache == NULL)
        goto python;
    int repairs = losses != Py_None && cache != Py_None;
    Py_ssize_t cache_index = 0;
    if (repairs) {
        long long highest, mask;
        PyObject *missing = SLOT(losses, losses_layout, LT_MISSING);
        if (Py_TYPE(losses) != losses_layout.type || Py_TYPE(cache) != cache_layout.type
                || !signed_int(SLOT(losses, losses_layout, LT_HIGHEST), &highest)
                || (highest >= 0 && ((seq - highest) & 0xFFFF) != 1) || missing == NULL
                || !PyDict_CheckExact(missing) || PyDict_GET_SIZE(missing) != 0
                || !signed_int(SLOT(cache, cache_layout, C_MASK), &mask) || mask < 0)
            goto python;
        cache_index = (Py_ssize_t)(seq & mask);
        for (int i = C_SEQS; i <= C_TIMES; i++) {
            PyObject *list = SLOT(cache, cache_layout, i);
            if (list == NULL || !PyList_CheckExact(list) || PyList_GET_SIZE(list) <= cache_index)
                goto python;
        }
    }
    long long clock_rate, max_seq, cycles, received, last_transit = 0;
    PyObject *jitter = SLOT(stats, stats_layout, RS_JITTER), *transit = SLOT(stats, stats_layout, RS_TRANSIT);
    if (!signed_int(SLOT(stats, stats_layout, RS_CLOCK_RATE), &clock_rate)
            || !signed_int(SLOT(stats, stats_layout, RS_MAX_SEQ), &max_seq)
            || !signed_int(SLOT(stats, stats_layout, RS_CYCLES), &cycles)
            || !signed_int(SLOT(stats, stats_layout, RS_RECEIVED), &received) || SLOT(stats, stats_layout,
            RS_BASE_SEQ) == NULL || jitter == NULL || !PyFloat_CheckExact(jitter) || transit == NULL
            || (transit != Py_None && !signed_int(transit, &last_transit)))
        goto python;
    double scaled = now * (double)clock_rate;
    if (!FITS(scaled) || clock_rate > (1LL << 53))
        goto python;
    PyObject *reads = PyObject_GetAttr(track, reads_extensions_name);
    if (reads == NULL)
        return NULL;
    Py_DECREF(reads); /* the track holds it: only compared */
    if (reads != Py_True && reads != Py_False)
        goto python;
    Py_ssize_t offset = payload_offset(p, length);
    if (offset < 0 && PyList_GET_SIZE(legs) != 0)
        goto python;

    PyObject *seq_object = PyLong_FromLong(seq);
    if (seq_object == NULL)
        return NULL;
    slot_set(stream, &stream_layout, ST_LAST_PACKET, Py_NewRef(now_object));
    if (slot_set_long(stream, &stream_layout, ST_OCTETS, octets + length + PACKET_OVERHEAD) < 0)
        goto fail;
    if (repairs) { /* losses.received says NEW; cache.put */
        slot_set(losses, &losses_layout, LT_HIGHEST, Py_NewRef(seq_object));
        list_set(SLOT(cache, cache_layout, C_SEQS), cache_index, seq_object);
        list_set(SLOT(cache, cache_layout, C_PACKETS), cache_index, packet);
        list_set(SLOT(cache, cache_layout, C_TIMES), cache_index, now_object);
    }
    /* stats.update */
    if (received == 0) {
        slot_set(stats, &stats_layout, RS_BASE_SEQ, Py_NewRef(seq_object));
        slot_set(stats, &stats_layout, RS_MAX_SEQ, Py_NewRef(seq_object));
    } else if (seq == max_seq + 1) {
        slot_set(stats, &stats_layout, RS_MAX_SEQ, Py_NewRef(seq_object));
    } else if (((seq - max_seq) & 0xFFFF) < 0x8000) {
        if (seq < max_seq && slot_set_long(stats, &stats_layout, RS_CYCLES, cycles + 0x10000) < 0)
            goto fail;
        slot_set(stats, &stats_layout, RS_MAX_SEQ, Py_NewRef(seq_object));
    }
    if (slot_set_long(stats, &stats_layout, RS_RECEIVED, received + 1) < 0)
        goto fail;
    long long arrival = (long long)scaled - ts;
    if (transit != Py_None) {
        long long d = arrival - last_transit;
        if (d < -0x80000000LL || d >= 0x80000000LL)
            d = py_mod(d + 0x80000000LL, 0x100000000LL) - 0x80000000LL;
        double value = PyFloat_AS_DOUBLE(jitter);
        PyObject *updated = PyFloat_FromDouble(value + ((double)(d >= 0 ? d : -d) - value) / 16);
        if (updated == NULL)
            goto fail;
        slot_set(stats, &stats_layout, RS_JITTER, updated);
    }
    if (slot_set_long(stats, &stats_layout, RS_TRANSIT, arrival) < 0)
        goto fail;

    PyObject *found = Py_None;
    if (reads == Py_True) {
        found = elements(p, length);
        if (found == NULL)
            goto fail;
        if (found != Py_None && PyDict_GET_SIZE(found) != 0) {
            PyObject *level_id = PyObject_GetAttr(track, level_id_name);
            PyObject *level = level_id != NULL ? PyDict_GetItemWithError(found, level_id) : NULL;
            Py_XDECREF(level_id);
            if (level == NULL && PyErr_Occurred()) {
                Py_DECREF(found);
                goto fail;
            }
            if (level != NULL) {
                PyObject *value = PyLong_FromLong(((const unsigned char *)PyBytes_AS_STRING(level))[0] & 0x7F);
                int rc = value != NULL ? PyObject_SetAttr(track, audio_level_name, value) : -1;
                Py_XDECREF(value);
                if (rc < 0) {
                    Py_DECREF(found);
                    goto fail;
                }
            }
        }
    } else {
        Py_INCREF(found);
    }
    PyObject *result = NULL;
    if (PyList_GET_SIZE(legs) == 0) {
        result = Py_NewRef(Py_None);
    } else {
        PyObject *legs_ref = Py_NewRef(legs); /* the fan-out may run a leg's Python */
        PyObject *ts_object = PyLong_FromLongLong(ts);
        if (ts_object != NULL)
            result = fan_out(legs_ref, packet, (const char *)p + offset, length - offset, NULL, seq_object,
                             ts_object, found, now_object);
        Py_XDECREF(ts_object);
        Py_DECREF(legs_ref);
    }
    Py_DECREF(found);
    Py_DECREF(seq_object);
    return result;
fail:
    Py_DECREF(seq_object);
    return NULL;
python:
    {
        PyObject *call[] = {track, stream, packet, now_object};
        return PyObject_VectorcallMethod(receive_in_python_name, call, 4 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    }
}

static PyObject *
receive(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "receive(track, stream, packet, now) takes 4 arguments");
        return NULL;
    }
    if (track_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "receive before configure_receive");
        return NULL;
    }
    if (Py_TYPE(args[0]) != track_type) {
        PyObject *call[] = {args[0], args[1], args[2], args[3]};
        return PyObject_VectorcallMethod(receive_in_python_name, call, 4 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    }
    return track_receive(args[0], args[1], args[2], args[3]);
}

/* TransportReceiver.arrived(seq, now), for a receiver whose state `arrival_plan` took. */
static int
arrived(PyObject *receiver, long seq, long long highest, int has_next, long long next_seq, PyObject *now_object)
{
    long long full = highest < 0 ? seq : highest + ((seq - highest + 0x8000) & 0xFFFF) - 0x8000;
    if (!has_next) {
        if (slot_set_long(receiver, &receiver_layout, TR_NEXT_SEQ, full) < 0)
            return -1;
        next_seq = full;
    }
    if (full < next_seq)
        return 0;
    PyObject *key = PyLong_FromLongLong(full);
    if (key == NULL)
        return -1;
    int rc = PyDict_SetItem(SLOT(receiver, receiver_layout, TR_ARRIVALS), key, now_object);
    if (rc == 0 && full > highest)
        slot_set(receiver, &receiver_layout, TR_HIGHEST, key);
    else
        Py_DECREF(key);
    return rc;
}

static PyObject *
rtp(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "rtp(session, packet, now) takes 3 arguments");
        return NULL;
    }
    if (track_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "rtp before configure_receive");
        return NULL;
    }
    PyObject *session = args[0], *packet = args[1], *now_object = args[2];
    if (!PyBytes_CheckExact(packet) || PyBytes_GET_SIZE(packet) < 12)
        goto python;
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(packet);
    Py_ssize_t length = PyBytes_GET_SIZE(packet);
    PyObject *receiver = PyObject_GetAttr(session, transport_in_name);
    if (receiver == NULL)
        return NULL;
    long transport_seq = -1;
    long long highest = 0, next_seq = 0;
    int has_next = 0;
    if (receiver != Py_None) {
        long long ext_id;
        PyObject *arrivals = SLOT(receiver, receiver_layout, TR_ARRIVALS),
                 *next = SLOT(receiver, receiver_layout, TR_NEXT_SEQ);
        if (Py_TYPE(receiver) != receiver_layout.type
                || !signed_int(SLOT(receiver, receiver_layout, TR_EXT_ID), &ext_id) || ext_id < 0 || ext_id > 0xFF
                || arrivals == NULL || !PyDict_CheckExact(arrivals) || next == NULL
                || !signed_int(SLOT(receiver, receiver_layout, TR_HIGHEST), &highest)
                || (next != Py_None && !signed_int(next, &next_seq))) {
            Py_DECREF(receiver);
            goto python;
        }
        has_next = next != Py_None;
        transport_seq = find_two(p, length, (long)ext_id);
    }
    PyObject *by_ssrc = PyObject_GetAttr(session, by_ssrc_name);
    if (by_ssrc == NULL || !PyDict_CheckExact(by_ssrc)) {
        Py_DECREF(receiver);
        if (by_ssrc == NULL)
            return NULL;
        Py_DECREF(by_ssrc);
        goto python;
    }
    int rc = transport_seq >= 0 ? arrived(receiver, transport_seq, highest, has_next, next_seq, now_object) : 0;
    Py_DECREF(receiver);
    if (rc < 0) {
        Py_DECREF(by_ssrc);
        return NULL;
    }
    PyObject *ssrc = PyLong_FromUnsignedLong((unsigned long)p[8] << 24 | p[9] << 16 | p[10] << 8 | p[11]);
    PyObject *stream = ssrc != NULL ? PyDict_GetItemWithError(by_ssrc, ssrc) : NULL;
    Py_XDECREF(ssrc);
    Py_XINCREF(stream);
    Py_DECREF(by_ssrc);
    if (stream == NULL) {
        if (PyErr_Occurred())
            return NULL;
        PyObject *call[] = {session, packet, now_object};
        return PyObject_VectorcallMethod(unbound_name, call, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    }
    PyObject *track = Py_TYPE(stream) == stream_layout.type ? Py_XNewRef(SLOT(stream, stream_layout, ST_TRACK))
                                                             : PyObject_GetAttrString(stream, "track");
    PyObject *result = NULL;
    if (track == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_AttributeError, "a stream without its track");
    } else if (Py_TYPE(track) == track_type) {
        result = track_receive(track, stream, packet, now_object);
    } else {
        PyObject *call[] = {track, stream, packet, now_object};
        result = PyObject_VectorcallMethod(receive_name, call, 4 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    }
    Py_XDECREF(track);
    Py_DECREF(stream);
    return result;
python:
    {
        PyObject *call[] = {session, packet, now_object};
        return PyObject_VectorcallMethod(rtp_in_python_name, call, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    }
}

/* ---- TransportReceiver.report: the transport-cc feedback toward a publisher (issue 17) ----------------
 *
 * transport_report(receiver, sender_ssrc, media_ssrc, max_reported) is TransportReceiver.report, with
 * feedback.transport_feedback_packet and _chunks: the same state left, the same bytes. A receiver outside
 * the common case (another class, keys or times that are not exact ints and floats, times that are not
 * finite or so large that the Python path's exact ints would matter) gets NotImplemented before anything
 * is touched, and the Python path takes it. */

#define TICKS_PER_SECOND 4000.0 /* feedback._TICKS_PER_SECOND */
#define TIME_BOUND 1.0e12       /* seconds: well within the 2**53 ticks a double holds exactly */

/* feedback._chunks: the packet status chunks of symbols[0..count), big-endian at out; how many. */
static Py_ssize_t
status_chunks(const unsigned char *symbols, Py_ssize_t count, unsigned char *out)
{
    Py_ssize_t i = 0, n = 0;
    while (i < count) {
        unsigned symbol = symbols[i], chunk;
        Py_ssize_t run = 1;
        while (i + run < count && run < 0x1FFF && symbols[i + run] == symbol)
            run++;
        int wide = 0;
        for (Py_ssize_t k = i; k < i + 14 && k < count; k++)
            wide |= symbols[k] == 2;
        if (run >= 14 || (run >= 7 && wide)) {
            chunk = symbol << 13 | (unsigned)run;
            i += run;
        } else if (!wide) {
            chunk = 0x8000;
            for (Py_ssize_t k = 0; k < 14 && i + k < count; k++)
                chunk |= (unsigned)symbols[i + k] << (13 - k);
            i += 14;
        } else {
            chunk = 0xC000;
            for (Py_ssize_t k = 0; k < 7 && i + k < count; k++)
                chunk |= (unsigned)symbols[i + k] << (12 - 2 * k);
            i += 7;
        }
        out[2 * n] = (unsigned char)(chunk >> 8);
        out[2 * n + 1] = (unsigned char)chunk;
        n++;
    }
    return n;
}

static inline void
put32(unsigned char *at, unsigned long long value)
{
    at[0] = (unsigned char)(value >> 24);
    at[1] = (unsigned char)(value >> 16);
    at[2] = (unsigned char)(value >> 8);
    at[3] = (unsigned char)value;
}

static PyObject *
transport_report(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "transport_report(receiver, sender_ssrc, media_ssrc, max_reported)");
        return NULL;
    }
    PyObject *receiver = args[0];
    if (receiver_layout.type == NULL || Py_TYPE(receiver) != receiver_layout.type)
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *arrivals = SLOT(receiver, receiver_layout, TR_ARRIVALS),
             *next = SLOT(receiver, receiver_layout, TR_NEXT_SEQ);
    if (arrivals == NULL || !PyDict_CheckExact(arrivals) || next == NULL)
        Py_RETURN_NOTIMPLEMENTED;
    if (PyDict_GET_SIZE(arrivals) == 0 || next == Py_None)
        Py_RETURN_NONE;
    long long next_seq, highest, count, sender_ssrc, media_ssrc, max_reported;
    if (!signed_int(next, &next_seq) || !signed_int(SLOT(receiver, receiver_layout, TR_HIGHEST), &highest)
            || !signed_int(SLOT(receiver, receiver_layout, TR_FEEDBACK_COUNT), &count)
            || !signed_int(args[1], &sender_ssrc) || sender_ssrc < 0 || sender_ssrc > 0xFFFFFFFFLL
            || !signed_int(args[2], &media_ssrc) || media_ssrc < 0 || media_ssrc > 0xFFFFFFFFLL
            || !signed_int(args[3], &max_reported))
        Py_RETURN_NOTIMPLEMENTED;
    long long start = highest - max_reported + 1 > next_seq ? highest - max_reported + 1 : next_seq;
    long long span = highest - start + 1;
    if (span <= 0 || span > 0xFFFF) /* the Python path raises */
        Py_RETURN_NOTIMPLEMENTED;

    /* The arrival time of each of start..highest (symbols[i] != 0: arrived), and the earliest. */
    Py_ssize_t n = (Py_ssize_t)span;
    double *times = PyMem_Malloc((size_t)n * sizeof(double));
    unsigned char *symbols = PyMem_Calloc((size_t)n, 1), *deltas = PyMem_Malloc(2 * (size_t)n),
                  *chunks = PyMem_Malloc(2 * ((size_t)n / 7 + 1));
    PyObject *result = NULL;
    if (times == NULL || symbols == NULL || deltas == NULL || chunks == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    double reference_time = 0.0;
    int any = 0;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(arrivals, &pos, &key, &value)) {
        long long seq;
        if (!signed_int(key, &seq)) {
            result = Py_NewRef(Py_NotImplemented);
            goto done;
        }
        if (seq < start || seq > highest)
            continue;
        double t = PyFloat_CheckExact(value) ? PyFloat_AS_DOUBLE(value) : NAN;
        if (!(fabs(t) < TIME_BOUND)) {
            result = Py_NewRef(Py_NotImplemented);
            goto done;
        }
        times[seq - start] = t;
        symbols[seq - start] = 1;
        if (!any || t < reference_time)
            reference_time = t;
        any = 1;
    }
    if (!any) { /* nothing in the range: the Python path raises */
        result = Py_NewRef(Py_NotImplemented);
        goto done;
    }

    /* The receiver's state, as the Python path leaves it whether or not the feedback can be built. */
    PyObject *next_object = PyLong_FromLongLong(highest + 1), *count_object = PyLong_FromLongLong((count + 1) & 0xFF);
    if (next_object == NULL || count_object == NULL) {
        Py_XDECREF(next_object);
        Py_XDECREF(count_object);
        goto done;
    }
    slot_set(receiver, &receiver_layout, TR_NEXT_SEQ, next_object);
    PyDict_Clear(arrivals);
    slot_set(receiver, &receiver_layout, TR_FEEDBACK_COUNT, count_object);

    long long reference = (long long)floor(reference_time / 0.064 + 1e-9);
    long long ticks = reference * 256; /* feedback._TICKS_PER_REFERENCE */
    Py_ssize_t delta_length = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!symbols[i])
            continue;
        long long arrived = (long long)nearbyint(times[i] * TICKS_PER_SECOND); /* round(): half to even */
        long long delta = arrived - ticks;
        ticks = arrived;
        if (delta >= 0 && delta <= 0xFF) {
            deltas[delta_length++] = (unsigned char)delta;
        } else if (delta >= -0x8000 && delta < 0x8000) {
            symbols[i] = 2;
            deltas[delta_length++] = (unsigned char)((unsigned long long)delta >> 8);
            deltas[delta_length++] = (unsigned char)delta;
        } else { /* the Python path's ValueError: a stalled publisher, started over next time */
            result = Py_NewRef(Py_None);
            goto done;
        }
    }
    Py_ssize_t chunk_count = status_chunks(symbols, n, chunks);
    Py_ssize_t content = 12 + 2 * chunk_count + delta_length, padded = content + (-content & 3);
    result = PyBytes_FromStringAndSize(NULL, 8 + padded);
    if (result == NULL)
        goto done;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    out[0] = 0x80 | 15; /* FMT_TRANSPORT_CC */
    out[1] = 205;       /* PT_RTPFB */
    out[2] = (unsigned char)((1 + padded / 4) >> 8);
    out[3] = (unsigned char)(1 + padded / 4);
    put32(out + 4, (unsigned long long)sender_ssrc);
    put32(out + 8, (unsigned long long)media_ssrc);
    out[12] = (unsigned char)((unsigned long long)start >> 8);
    out[13] = (unsigned char)start;
    out[14] = (unsigned char)(span >> 8);
    out[15] = (unsigned char)span;
    put32(out + 16, (unsigned long long)((reference & 0xFFFFFF) << 8 | ((count + 1) & 0xFF)));
    memcpy(out + 20, chunks, 2 * (size_t)chunk_count);
    memcpy(out + 20 + 2 * chunk_count, deltas, (size_t)delta_length);
    memset(out + 8 + content, 0, (size_t)(padded - content));
done:
    PyMem_Free(times);
    PyMem_Free(symbols);
    PyMem_Free(deltas);
    PyMem_Free(chunks);
    return result;
}

static PyMethodDef methods[] = {
    {"configure", (PyCFunction)configure, METH_VARARGS,
     "configure(Leg, port Session, Listener, TransportSender, MediaPort.send_rtp, extensions.body)\n\n"
     "The classes whose slots the fan-out reads and writes, the function a leg's `send` must be bound to\n"
     "for the compiled path, and the function that builds a leg's extension elements."},
    {"fanout", (PyCFunction)(void (*)(void))fanout, METH_FASTCALL,
     "fanout(legs, packet, payload, seq, ts, found, now)\n\n"
     "Forward one RTP packet of a stream on each of its legs, as each leg's forward(packet, payload, seq,\n"
     "ts, elements, now) would, `elements` being extensions.body(found, leg.ext_map) (b\"\" without\n"
     "`found`): the common case here, every other leg through its own forward."},
    {"transport_cc", (PyCFunction)(void (*)(void))transport_cc, METH_FASTCALL,
     "transport_cc(ring, packet, at, end, estimator)\n\n"
     "The transport-cc FCI in packet[at:end] through the SendSideEstimator's per-packet loop (the ring's\n"
     "arrays, its _AckedRate and _Groups): None when malformed, NotImplemented when the Python path must\n"
     "take it, else (lost, reported, last_arrival_ms, [(deltas, arrival_ms)], [lost seq the ring holds])."},
    {"configure_receive", (PyCFunction)configure_receive, METH_VARARGS,
     "configure_receive(PublishedTrack, Stream, LossTracker, RetransmissionCache, ReceiveStats, TransportReceiver)\n\n"
     "The classes whose objects the receive path takes in its common case."},
    {"receive", (PyCFunction)(void (*)(void))receive, METH_FASTCALL,
     "receive(track, stream, packet, now)\n\n"
     "PublishedTrack.receive: the common case here (fan-out included), any other packet through\n"
     "track.receive_in_python."},
    {"rtp", (PyCFunction)(void (*)(void))rtp, METH_FASTCALL,
     "rtp(session, packet, now)\n\n"
     "CallSession.rtp: the transport-wide arrival, the stream by SSRC (else session._unbound) and the\n"
     "track's receive as `receive` does it; session.rtp_in_python where the session is outside the common case."},
    {"transport_report", (PyCFunction)(void (*)(void))transport_report, METH_FASTCALL,
     "transport_report(receiver, sender_ssrc, media_ssrc, max_reported)\n\n"
     "TransportReceiver.report for a receiver of the class configure_receive took: the feedback's bytes,\n"
     "None, or NotImplemented when the Python path must take it."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "appliance.sfu._fanout",
    "The SFU's per-leg forwarding in one call per packet (appliance/sfu/fanout.py is its Python side).", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__fanout(void)
{
    if (PyType_Ready(&RingType) < 0)
        return NULL;
    port_session_name = PyUnicode_InternFromString("port_session");
    transport_out_name = PyUnicode_InternFromString("transport_out");
    forward_name = PyUnicode_InternFromString("forward");
    queue_name = PyUnicode_InternFromString("_queue");
    if (port_session_name == NULL || transport_out_name == NULL || forward_name == NULL || queue_name == NULL)
        return NULL;
    PyObject **names[] = {&unwrap_name, &groups_name, &acked_name, &last_arrival_name, &first_name, &last_name,
                          &arrival_name, &size_name, &previous_name, &counts_name, &values_name,
                          &origin_index_name, &origin_ms_name, &count_name, &value_name, &reads_extensions_name,
                          &level_id_name, &audio_level_name, &receive_in_python_name, &receive_name,
                          &transport_in_name, &by_ssrc_name, &rtp_in_python_name, &unbound_name};
    const char *const strings[] = {"_unwrap", "_groups", "_acked", "_last_arrival_ms", "first", "last", "arrival",
                                   "size", "previous", "_counts", "_values", "_origin_index", "_origin_ms",
                                   "_count", "_value", "reads_extensions", "level_id", "audio_level",
                                   "receive_in_python", "receive", "transport_in", "by_ssrc", "rtp_in_python",
                                   "_unbound"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if ((*names[i] = PyUnicode_InternFromString(strings[i])) == NULL)
            return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Ring", (PyObject *)&RingType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
