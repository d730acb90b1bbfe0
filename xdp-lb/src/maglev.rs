//! Maglev table population (owned by the maglev work; see the module docs once written).
