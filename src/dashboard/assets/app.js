// placeholder: built by dashboard/
