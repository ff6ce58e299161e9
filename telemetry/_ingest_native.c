/* telemetry._ingest_native: a worker's table of known reports, looked up without a Python object per report.
 *
 * Ingest's usual batch repeats reports this worker has already read and accepted: a client's k-RR report
 * takes one of few values (metric, value, day, region), and the canonical JSON and the staged record of
 * each were worked out the first time (telemetry/ingest/validation.py, the Python path, which stays the
 * reference). KnownReports maps a report's bytes as sent to what that first time found: its canonical
 * JSON, its staged record and the number of its (metric, day) group. lookup() takes a batch's reports
 * array as msgspec passed it (valid JSON, checked before), splits it into its elements and finds each one;
 * a batch of known reports of one group comes back as its count, its group, the canonical JSON of its
 * reports joined by commas (the digest's input) and their records joined (the staged payload). Anything
 * else (an element never accepted, two groups, a backslash, more elements than allowed) returns None and
 * takes the Python path, which gives the same answer and teaches the table.
 *
 * Keys are hashed with CPython's keyed SipHash (the hash of bytes, seeded per process), so that clients
 * cannot choose reports that collide. The table holds copies of everything; the GIL is held throughout.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if PY_VERSION_HEX >= 0x030E0000  /* public from 3.14 */
#define HASH_BYTES(data, size) Py_HashBuffer((data), (size))
#else
#define HASH_BYTES(data, size) _Py_HashBytes((data), (size))
#endif

typedef struct {
    Py_ssize_t key_size, canonical_size, record_size;
    long long group;
    char data[];  /* key, then canonical JSON, then record */
} Entry;

typedef struct {
    Py_hash_t hash;
    Entry *entry;  /* NULL: an empty slot */
} Slot;

typedef struct {
    PyObject_HEAD
    Slot *slots;
    Py_ssize_t capacity;  /* a power of two */
    Py_ssize_t used;
} KnownReports;

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static void free_entries(KnownReports *self) {
    for (Py_ssize_t i = 0; i < self->capacity; i++) {
        PyMem_Free(self->slots[i].entry);
    }
    PyMem_Free(self->slots);
    self->slots = NULL;
    self->capacity = self->used = 0;
}

static int allocate(KnownReports *self, Py_ssize_t capacity) {
    Slot *slots = PyMem_Calloc((size_t)capacity, sizeof(Slot));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->slots = slots;
    self->capacity = capacity;
    self->used = 0;
    return 0;
}

/* The slot of key (data, size) with hash: its entry's, or the empty one where it would go. */
static Slot *find(const KnownReports *self, const char *data, Py_ssize_t size, Py_hash_t hash) {
    size_t mask = (size_t)self->capacity - 1;
    size_t i = (size_t)hash & mask;
    for (;;) {  /* linear probing; the table is at most half full, so an empty slot ends the probe */
        Slot *slot = &self->slots[i];
        if (slot->entry == NULL) {
            return slot;
        }
        if (slot->hash == hash && slot->entry->key_size == size && memcmp(slot->entry->data, data, (size_t)size) == 0) {
            return slot;
        }
        i = (i + 1) & mask;
    }
}

static int grow(KnownReports *self) {
    Slot *old = self->slots;
    Py_ssize_t old_capacity = self->capacity, used = self->used;
    if (allocate(self, old_capacity * 2) < 0) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < old_capacity; i++) {
        if (old[i].entry != NULL) {
            Entry *entry = old[i].entry;
            *find(self, entry->data, entry->key_size, old[i].hash) = old[i];
        }
    }
    self->used = used;
    PyMem_Free(old);
    return 0;
}

static PyObject *KnownReports_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    if (PyTuple_GET_SIZE(args) > 0 || (kwargs != NULL && PyDict_GET_SIZE(kwargs) > 0)) {
        PyErr_SetString(PyExc_TypeError, "KnownReports() takes no arguments");
        return NULL;
    }
    KnownReports *self = (KnownReports *)type->tp_alloc(type, 0);
    if (self != NULL && allocate(self, 1024) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void KnownReports_dealloc(KnownReports *self) {
    free_entries(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

PyDoc_STRVAR(add_doc, "add(report, canonical, record, group)\n--\n\n"
             "Remember a report (its bytes as sent) that was accepted: its canonical JSON, staged record and group.\n"
             "A report already known keeps its first entry.");

static PyObject *KnownReports_add(KnownReports *self, PyObject *args) {
    Py_buffer key, canonical, record;
    long long group;
    if (!PyArg_ParseTuple(args, "y*y*y*L:add", &key, &canonical, &record, &group)) {
        return NULL;
    }
    PyObject *result = NULL;
    if (key.len == 0) {
        PyErr_SetString(PyExc_ValueError, "a report cannot be empty");
        goto done;
    }
    if ((self->used + 1) * 2 > self->capacity && grow(self) < 0) {
        goto done;
    }
    Py_hash_t hash = HASH_BYTES(key.buf, key.len);
    Slot *slot = find(self, key.buf, key.len, hash);
    if (slot->entry == NULL) {
        Entry *entry = PyMem_Malloc(sizeof(Entry) + (size_t)(key.len + canonical.len + record.len));
        if (entry == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        entry->key_size = key.len;
        entry->canonical_size = canonical.len;
        entry->record_size = record.len;
        entry->group = group;
        memcpy(entry->data, key.buf, (size_t)key.len);
        memcpy(entry->data + key.len, canonical.buf, (size_t)canonical.len);
        memcpy(entry->data + key.len + canonical.len, record.buf, (size_t)record.len);
        slot->hash = hash;
        slot->entry = entry;
        self->used++;
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&key);
    PyBuffer_Release(&canonical);
    PyBuffer_Release(&record);
    return result;
}

/* The end of the array element that starts at `start` (a ',' or the array's closing ']' at depth 0), or -1
 * on a backslash or an unterminated array. No backslash anywhere means no escape: every '"' opens or closes
 * a string, and brackets inside strings are skipped. */
static Py_ssize_t element_end(const char *text, Py_ssize_t start, Py_ssize_t size) {
    int depth = 0, in_string = 0;
    for (Py_ssize_t i = start; i < size; i++) {
        char c = text[i];
        if (c == '\\') {
            return -1;
        }
        if (in_string) {
            in_string = c != '"';
        } else if (c == '"') {
            in_string = 1;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (depth == 0) {
                return c == ']' ? i : -1;
            }
            depth--;
        } else if (c == ',' && depth == 0) {
            return i;
        }
    }
    return -1;
}

PyDoc_STRVAR(lookup_doc, "lookup(reports, max_count)\n--\n\n"
             "For a JSON array of reports (bytes-like, valid JSON) whose elements are all known and of one group,\n"
             "and at most max_count of them: (count, group, canonical JSON joined by ',', records joined).\n"
             "Otherwise None.");

static PyObject *KnownReports_lookup(KnownReports *self, PyObject *args) {
    Py_buffer array;
    Py_ssize_t max_count;
    if (!PyArg_ParseTuple(args, "y*n:lookup", &array, &max_count)) {
        return NULL;
    }
    const char *text = array.buf;
    Py_ssize_t size = array.len, count = 0, canonical_size = 0, record_size = 0;
    long long group = 0;
    PyObject *result = NULL;
    /* an element and its comma take two bytes at least: no more than size / 2 + 1 of them */
    Py_ssize_t room = max_count < size / 2 + 1 ? max_count : size / 2 + 1;
    Entry **found = PyMem_Malloc(sizeof(Entry *) * (size_t)(room > 0 ? room : 1));
    if (found == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t i = 1;
    if (max_count < 1 || size < 2 || text[0] != '[' || text[size - 1] != ']') {
        goto miss;
    }
    while (i < size - 1 && is_space(text[i])) {
        i++;
    }
    while (i < size - 1) {  /* i: the first character of an element */
        Py_ssize_t end = element_end(text, i, size), last = end;
        if (end < 0 || count == room) {
            goto miss;
        }
        while (last > i && is_space(text[last - 1])) {
            last--;
        }
        Py_hash_t hash = HASH_BYTES(text + i, last - i);
        Entry *entry = find(self, text + i, last - i, hash)->entry;
        if (entry == NULL || (count > 0 && entry->group != group)) {
            goto miss;
        }
        group = entry->group;
        found[count++] = entry;
        canonical_size += entry->canonical_size;
        record_size += entry->record_size;
        if (text[end] == ']') {
            if (end != size - 1) {
                goto miss;
            }
            break;
        }
        i = end + 1;
        while (i < size - 1 && is_space(text[i])) {
            i++;
        }
        if (i == size - 1) {  /* a trailing comma: not valid JSON, so not from msgspec */
            goto miss;
        }
    }
    if (count == 0) {
        goto miss;
    }
    PyObject *canonical = PyBytes_FromStringAndSize(NULL, canonical_size + count - 1);
    PyObject *records = canonical ? PyBytes_FromStringAndSize(NULL, record_size) : NULL;
    if (records == NULL) {
        Py_XDECREF(canonical);
        goto done;
    }
    char *canonical_out = PyBytes_AS_STRING(canonical), *records_out = PyBytes_AS_STRING(records);
    for (Py_ssize_t k = 0; k < count; k++) {
        Entry *entry = found[k];
        if (k > 0) {
            *canonical_out++ = ',';
        }
        memcpy(canonical_out, entry->data + entry->key_size, (size_t)entry->canonical_size);
        canonical_out += entry->canonical_size;
        memcpy(records_out, entry->data + entry->key_size + entry->canonical_size, (size_t)entry->record_size);
        records_out += entry->record_size;
    }
    result = Py_BuildValue("nLNN", count, group, canonical, records);
    goto done;
miss:
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(found);
    PyBuffer_Release(&array);
    return result;
}

PyDoc_STRVAR(spans_doc, "spans(reports)\n--\n\n"
             "The elements of a JSON array (bytes-like, valid JSON, no backslash) as bytes, as lookup() splits it;\n"
             "None where lookup() would not split it.");

static PyObject *KnownReports_spans(PyObject *Py_UNUSED(cls), PyObject *arg) {
    Py_buffer array;
    if (PyObject_GetBuffer(arg, &array, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const char *text = array.buf;
    Py_ssize_t size = array.len, i = 1;
    PyObject *spans = PyList_New(0);
    if (spans == NULL) {
        goto done;
    }
    if (size < 2 || text[0] != '[' || text[size - 1] != ']') {
        goto miss;
    }
    while (i < size - 1 && is_space(text[i])) {
        i++;
    }
    while (i < size - 1) {
        Py_ssize_t end = element_end(text, i, size), last = end;
        if (end < 0) {
            goto miss;
        }
        while (last > i && is_space(text[last - 1])) {
            last--;
        }
        PyObject *span = PyBytes_FromStringAndSize(text + i, last - i);
        if (span == NULL || PyList_Append(spans, span) < 0) {
            Py_XDECREF(span);
            Py_CLEAR(spans);
            goto done;
        }
        Py_DECREF(span);
        if (text[end] == ']') {
            if (end != size - 1) {
                goto miss;
            }
            break;
        }
        i = end + 1;
        while (i < size - 1 && is_space(text[i])) {
            i++;
        }
        if (i == size - 1) {
            goto miss;
        }
    }
    goto done;
miss:
    Py_DECREF(spans);
    spans = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&array);
    return spans;
}

static PyObject *KnownReports_clear(KnownReports *self, PyObject *Py_UNUSED(ignored)) {
    KnownReports fresh;
    if (allocate(&fresh, 1024) < 0) {  /* the table stays whole if this fails */
        return NULL;
    }
    free_entries(self);
    self->slots = fresh.slots;
    self->capacity = fresh.capacity;
    self->used = 0;
    Py_RETURN_NONE;
}

static Py_ssize_t KnownReports_len(KnownReports *self) { return self->used; }

static PyMethodDef KnownReports_methods[] = {
    {"add", (PyCFunction)KnownReports_add, METH_VARARGS, add_doc},
    {"lookup", (PyCFunction)KnownReports_lookup, METH_VARARGS, lookup_doc},
    {"spans", (PyCFunction)KnownReports_spans, METH_O | METH_CLASS, spans_doc},
    {"clear", (PyCFunction)KnownReports_clear, METH_NOARGS, "Forget every report."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods KnownReports_as_sequence = {
    .sq_length = (lenfunc)KnownReports_len,
};

static PyTypeObject KnownReportsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "telemetry._ingest_native.KnownReports",
    .tp_doc = PyDoc_STR("A worker's table of known reports: bytes as sent -> canonical JSON, record, group."),
    .tp_basicsize = sizeof(KnownReports),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = KnownReports_new,
    .tp_dealloc = (destructor)KnownReports_dealloc,
    .tp_methods = KnownReports_methods,
    .tp_as_sequence = &KnownReports_as_sequence,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "telemetry._ingest_native",
    "A worker's table of known reports for ingest's usual batch (telemetry/ingest/validation.py).", -1, NULL,
};

PyMODINIT_FUNC PyInit__ingest_native(void) {
    if (PyType_Ready(&KnownReportsType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "KnownReports", (PyObject *)&KnownReportsType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
