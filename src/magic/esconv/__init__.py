"""The ESConv data: dialogues in MultiESC form, strategy labels, sample enumeration and ids, the HF converter."""
