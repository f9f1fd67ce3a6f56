/* Python objects' slots, read and written in C by the compiled helpers that keep their state in Python
 * objects (appliance/sfu/_fanout.c, appliance/turn/_relay.c): a class's slot offsets are found once from
 * its member descriptors, and each object is checked to be of exactly that class before they are used.
 * Each helper is a shared object of its own and includes this. */
#ifndef EDGECALL_SLOTS_H
#define EDGECALL_SLOTS_H

#include <Python.h>
#include <structmember.h>

#define LAYOUT_SLOTS 24 /* the most slots a layout holds */

typedef struct {
    PyTypeObject *type;
    Py_ssize_t offsets[LAYOUT_SLOTS];
} layout_t;

#define SLOT(object, layout, index) (*(PyObject **)((char *)(object) + (layout).offsets[index]))

/* Replace a slot's value, taking over the reference to `value`. */
static inline void
slot_set(PyObject *object, const layout_t *layout, int index, PyObject *value)
{
    PyObject **at = (PyObject **)((char *)object + layout->offsets[index]);
    PyObject *old = *at;
    *at = value;
    Py_XDECREF(old);
}

/* The offsets of `type`'s slots `names` (its own or a base class's: Allocation's tokens are
 * RelayBudget's); -1 with TypeError for a name that is no object slot of it. */
static int
find_layout(PyObject *type, const char *const *names, int count, layout_t *out)
{
    if (!PyType_Check(type)) {
        PyErr_SetString(PyExc_TypeError, "configure takes classes");
        return -1;
    }
    if (count > LAYOUT_SLOTS) {
        PyErr_SetString(PyExc_SystemError, "a layout of more slots than LAYOUT_SLOTS");
        return -1;
    }
    for (int i = 0; i < count; i++) {
        PyObject *descriptor = PyObject_GetAttrString(type, names[i]);
        if (descriptor == NULL)
            return -1;
        int ok = Py_IS_TYPE(descriptor, &PyMemberDescr_Type)
                 && PyType_IsSubtype((PyTypeObject *)type, ((PyMemberDescrObject *)descriptor)->d_common.d_type)
                 && ((PyMemberDescrObject *)descriptor)->d_member->type == T_OBJECT_EX;
        if (ok)
            out->offsets[i] = ((PyMemberDescrObject *)descriptor)->d_member->offset;
        Py_DECREF(descriptor);
        if (!ok) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not a slot of that class", ((PyTypeObject *)type)->tp_name,
                         names[i]);
            return -1;
        }
    }
    Py_XSETREF(out->type, (PyTypeObject *)Py_NewRef(type));
    return 0;
}

#endif
