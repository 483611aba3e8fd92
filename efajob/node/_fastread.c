/* The sampler's read loop in C: one pread per open counter file, parsed in the same pass.
 *
 * Why: a p5 sample is 1,088 preads. In Python each costs an interpreted loop step and a bytes
 * object before any parsing, which put a sample at 1.6-2.2x a C loop over the same
 * descriptors (docs/performance.md). This module is that C loop, nothing more: which files to
 * read, what a clean value is and what to do with the rest stay in efajob/node/sysfs.py and
 * readings.py. It is optional: the package builds and runs without it (pure-Python reads,
 * the same values), and EFAJOB_NO_NATIVE=1 turns it off.
 *
 * Reader(fds)      copies the descriptors (ints >= 0) into a C array; the caller builds a new
 *                  Reader whenever its descriptor list changes.
 * Reader.read(n)   preads the first n descriptors (all when n < 0 or n > len) at offset 0,
 *                  64 bytes each (sysfs regenerates an attribute at offset 0), with the GIL
 *                  released. Returns (True, [int, ...]) when every file read exactly
 *                  "<digits>\n" with a value that fits in 64 bits (the fast path of
 *                  readings._parse_all, same rule); otherwise (False, [item, ...]) where item
 *                  is the bytes read, or the errno (int) of a failed pread, so the caller can
 *                  parse, retry or reopen as the pure-Python path does, without reading twice.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#define READ_SIZE 64  /* sysfs.py _READ_SIZE */

typedef struct {
    PyObject_HEAD
    Py_ssize_t n;
    int *fds;
    char *bufs;        /* n slots of READ_SIZE bytes */
    Py_ssize_t *lens;  /* bytes read, or -errno */
    int busy;          /* a read() has released the GIL over the buffers */
} Reader;

static void Reader_dealloc(Reader *self) {
    PyMem_Free(self->fds);
    PyMem_Free(self->bufs);
    PyMem_Free(self->lens);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Reader_init(Reader *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"fds", NULL};
    PyObject *seq;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:Reader", kwlist, &seq))
        return -1;
    if (self->fds != NULL) {
        /* Fixed once built: a second __init__ would free buffers a read() may be using. */
        PyErr_SetString(PyExc_TypeError, "a Reader's descriptors are fixed: build a new one");
        return -1;
    }
    PyObject *fast = PySequence_Fast(seq, "Reader() takes a sequence of descriptors");
    if (fast == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    int *fds = PyMem_Malloc((n ? n : 1) * sizeof *fds);
    char *bufs = PyMem_Malloc((n ? n : 1) * (size_t)READ_SIZE);
    Py_ssize_t *lens = PyMem_Malloc((n ? n : 1) * sizeof *lens);
    if (fds == NULL || bufs == NULL || lens == NULL) {
        PyMem_Free(fds); PyMem_Free(bufs); PyMem_Free(lens);
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long fd = PyLong_AsLong(PySequence_Fast_GET_ITEM(fast, i));
        if (fd == -1 && PyErr_Occurred()) {
            goto fail;
        }
        if (fd < 0 || fd > INT32_MAX) {
            PyErr_Format(PyExc_ValueError, "descriptor %ld out of range", fd);
            goto fail;
        }
        fds[i] = (int)fd;
    }
    Py_DECREF(fast);
    self->fds = fds; self->bufs = bufs; self->lens = lens; self->n = n;
    return 0;
fail:
    PyMem_Free(fds); PyMem_Free(bufs); PyMem_Free(lens);
    Py_DECREF(fast);
    return -1;
}

/* "<digits>\n" exactly (at least one digit), value <= 2^64-1; returns 0 when clean. */
static int parse_clean(const char *p, Py_ssize_t len, unsigned long long *out) {
    if (len < 2 || p[len - 1] != '\n')
        return -1;
    unsigned long long v = 0;
    for (Py_ssize_t i = 0; i < len - 1; i++) {
        unsigned d = (unsigned char)p[i] - '0';
        if (d > 9)
            return -1;
        if (v > (ULLONG_MAX - d) / 10)
            return -1;  /* past 64 bits: the Python path decides (absent) */
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static PyObject *Reader_read(Reader *self, PyObject *args) {
    Py_ssize_t limit = -1;
    if (!PyArg_ParseTuple(args, "|n:read", &limit))
        return NULL;
    Py_ssize_t n = (limit < 0 || limit > self->n) ? self->n : limit;
    int clean = 1;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Reader.read() is already running in another thread");
        return NULL;
    }
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        ssize_t r;
        do {
            r = pread(self->fds[i], self->bufs + i * READ_SIZE, READ_SIZE, 0);
        } while (r < 0 && errno == EINTR);
        self->lens[i] = r < 0 ? -(Py_ssize_t)errno : (Py_ssize_t)r;
    }
    Py_END_ALLOW_THREADS
    self->busy = 0;

    PyObject *list = PyList_New(n);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n && clean; i++) {
        unsigned long long v;
        if (self->lens[i] < 0 || parse_clean(self->bufs + i * READ_SIZE, self->lens[i], &v)) {
            clean = 0;
            break;
        }
        PyObject *x = PyLong_FromUnsignedLongLong(v);
        if (x == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, x);
    }
    if (!clean) {
        /* Rebuild as raw items: what the Python path needs to decide file by file. */
        Py_DECREF(list);
        list = PyList_New(n);
        if (list == NULL)
            return NULL;
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_ssize_t len = self->lens[i];
            PyObject *x = len < 0 ? PyLong_FromSsize_t(-len)
                                  : PyBytes_FromStringAndSize(self->bufs + i * READ_SIZE, len);
            if (x == NULL) {
                Py_DECREF(list);
                return NULL;
            }
            PyList_SET_ITEM(list, i, x);
        }
    }
    PyObject *res = Py_BuildValue("(ON)", clean ? Py_True : Py_False, list);
    return res;
}

static Py_ssize_t Reader_len(Reader *self) { return self->n; }

static PyMethodDef Reader_methods[] = {
    {"read", (PyCFunction)Reader_read, METH_VARARGS,
     "read(n=-1) -> (clean, items): pread the first n descriptors at offset 0."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods Reader_as_sequence = {
    .sq_length = (lenfunc)Reader_len,
};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "efajob.node._fastread.Reader",
    .tp_basicsize = sizeof(Reader),
    .tp_dealloc = (destructor)Reader_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Reader(fds): preads a fixed list of open counter files (see the module doc).",
    .tp_methods = Reader_methods,
    .tp_as_sequence = &Reader_as_sequence,
    .tp_init = (initproc)Reader_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "efajob.node._fastread",
    .m_doc = "The sampler's pread-and-parse loop in C (optional; see efajob/node/sysfs.py).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__fastread(void) {
    if (PyType_Ready(&ReaderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&ReaderType);
    if (PyModule_AddObject(m, "Reader", (PyObject *)&ReaderType) < 0) {
        Py_DECREF(&ReaderType);
        Py_DECREF(m);
        return NULL;
    }
    /* sysfs.py NATIVE_API: a module built for another version's interface is not used. */
    if (PyModule_AddIntConstant(m, "API", 1) < 0 ||
        PyModule_AddIntConstant(m, "READ_SIZE", READ_SIZE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
